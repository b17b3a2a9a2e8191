"""The readings processor end to end in memory: decode, validate, de-duplicate, tag, reject grouping."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from pipeline.catalogue import load_catalogue
from pipeline.codecs import Decoder, Encoder, RecordType, SchemaStore, WireFormat
from pipeline.envelope import RawMessage, Reason
from pipeline.sinks import deadletter_headers
from pipeline.tenancy import Pseudonymizer, Registry
from pipeline.validation import DuplicateFilter, ReadingValidator
from pipeline.worker.processors import ReadingsProcessor, RegistryProcessor

NOW = 1_795_000_000_000
STORE = SchemaStore.load()
ENC = Encoder(STORE)


def _msg(value: bytes | None, offset: int, key: bytes = b"k", topic: str = "t.meter.readings") -> RawMessage:
    return RawMessage(topic, 0, offset, key, value, (("trace", b"abc"),), NOW)


@pytest.fixture
def registry() -> Registry:
    r = Registry()
    for dev, tenant in (("m1", "acme"), ("m2", "globex")):
        r.put({"subject_id": dev, "subject_type": "device", "tenant_id": tenant, "site_id": "s-" + tenant})
    return r


@pytest.fixture
def processor(registry: Registry) -> ReadingsProcessor:
    return ReadingsProcessor(
        Decoder(STORE),
        ReadingValidator(load_catalogue(), lateness_ms=30 * 86_400_000),
        registry,
        DuplicateFilter(10_000),
    )


def test_rows_are_tagged_and_rejections_grouped_per_reading_and_reason(processor: ReadingsProcessor) -> None:
    batch = {
        "gateway_id": "gw",
        "readings": [
            {
                "device_id": "m1",
                "ts": NOW - 1000,
                "measurements": {"voltage_l1": 230.0, "voltage_l2": 612.0, "voltage_l3": 700.0, "bogus": 1.0},
            },
            {"device_id": "nobody", "ts": NOW - 1000, "measurements": {"frequency": 50.0}},
        ],
    }
    single = {"device_id": "m2", "ts": NOW - 1000, "measurements": {"frequency": 50.0}}
    messages = [
        _msg(ENC(RecordType.METER_READING_BATCH, batch), 7),
        _msg(ENC(RecordType.METER_READING, single, WireFormat.JSON), 8),
        _msg(b"\x07junk", 9),
    ]
    result = processor(messages, NOW)
    rows = result.tables["readings_store"].to_pylist()
    assert [(r["tenant_id"], r["device_id"], r["quantity"], r["src_offset"]) for r in rows] == [
        ("acme", "m1", "voltage_l1", 7),
        ("globex", "m2", "frequency", 8),
    ]
    got = sorted((r.reason.value, r.original.offset, r.record_index) for r in result.rejects)
    assert got == [("out_of_range", 7, 0), ("undecodable", 9, -1), ("unknown_device", 7, 1), ("unknown_quantity", 7, 0)]
    out_of_range = next(r for r in result.rejects if r.reason is Reason.OUT_OF_RANGE)
    # one dead letter for both bad voltages of the reading, carrying only those channels
    assert json.loads(out_of_range.payload or b"")["measurements"] == {"voltage_l2": 612.0, "voltage_l3": 700.0}
    assert "voltage_l2" in out_of_range.detail and "voltage_l3" in out_of_range.detail
    headers = dict(deadletter_headers(out_of_range, NOW))
    assert headers["dl.reason"] == b"out_of_range" and headers["dl.source.offset"] == b"7"
    assert headers["trace"] == b"abc"  # the original headers are kept


def test_redelivery_within_the_process_is_dropped_and_conflicts_are_rejected(processor: ReadingsProcessor) -> None:
    reading = {"device_id": "m1", "ts": NOW - 5000, "measurements": {"frequency": 50.0, "voltage_l1": 230.0}}
    first = processor([_msg(ENC(RecordType.METER_READING, reading), 1)], NOW)
    assert first.accepted == 2
    again = processor([_msg(ENC(RecordType.METER_READING, reading), 1)], NOW)
    assert again.accepted == 0 and again.duplicates == 2 and again.rejects == []
    changed = {**reading, "measurements": {"frequency": 50.0, "voltage_l1": 240.0}}
    conflict = processor([_msg(ENC(RecordType.METER_READING, changed), 2)], NOW)
    assert conflict.accepted == 0 and conflict.duplicates == 1
    assert [r.reason for r in conflict.rejects] == [Reason.CONFLICTING_DUPLICATE]


def test_registry_processor_pseudonymises_sims_and_unregisters_on_tombstones(registry: Registry) -> None:
    proc = RegistryProcessor(Decoder(STORE), registry, Pseudonymizer(SecretStr("s")))
    sim = {
        "subject_id": "8991101200003204514",
        "subject_type": "sim",
        "kind": "sim",
        "tenant_id": "acme",
        "site_id": "s1",
        "updated_at": NOW,
    }
    msgs = [
        _msg(ENC(RecordType.DEVICE_REGISTRATION, sim), 1, key=b"8991101200003204514", topic="t.registry.devices"),
        _msg(None, 2, key=b"m1", topic="t.registry.devices"),
        _msg(
            ENC(RecordType.DEVICE_REGISTRATION, {**sim, "tenant_id": ""}),
            3,
            key=b"8991101200003204514",
            topic="t.registry.devices",
        ),
    ]
    result = proc(msgs, NOW)
    rows = result.tables["device_registry_store"].to_pylist()
    assert [(r["subject_type"], r["deleted"]) for r in rows] == [("sim", 0), ("device", 1)]
    assert "8991101200003204514" not in json.dumps(rows, default=str)  # the ICCID is pseudonymised
    assert registry.get("m1") is None and registry.get("8991101200003204514") is not None
    assert [r.reason for r in result.rejects] == [Reason.SCHEMA_MISMATCH]


def test_a_registration_is_kept_without_its_null_fields_and_its_row_reads_the_same_on_delete() -> None:
    registry = Registry()
    proc = RegistryProcessor(Decoder(STORE), registry, Pseudonymizer(SecretStr("s")))
    meter = {"subject_id": "m9", "subject_type": "device", "kind": "electricity_meter", "tenant_id": "acme",
             "site_id": "s1", "updated_at": NOW}
    put = _msg(ENC(RecordType.DEVICE_REGISTRATION, meter), 1, key=b"m9", topic="t.registry.devices")
    [row] = proc([put], NOW).tables["device_registry_store"].to_pylist()
    kept = registry.get("m9")
    assert kept is not None and kept.record["site_id"] == "s1" and kept.record.get("rated_power_w") is None
    assert None not in kept.record.values() and "rated_power_w" not in kept.record  # the decoded record had all fields
    other = registry.put({**meter, "subject_id": "m10"})
    assert kept.record["tenant_id"] is other.record["tenant_id"]  # repeated short strings are shared
    tombstone = _msg(None, 2, key=b"m9", topic="t.registry.devices")
    [gone] = proc([tombstone], NOW).tables["device_registry_store"].to_pylist()
    assert json.loads(gone["attributes"]) == json.loads(row["attributes"]) and gone["deleted"] == 1
