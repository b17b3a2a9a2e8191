"""Bad input never stops the worker: garbage, oversize and wrong-schema messages are dead-lettered."""

from __future__ import annotations

import json
import time

import pytest

from pipeline.codecs import Encoder, RecordType, SchemaStore, WireFormat
from tests.conftest import Env
from tests.support import WorkerProcess, consume_all, count_reasons, header, produce

pytestmark = pytest.mark.integration


def _registration(device: str, tenant: str = "acme") -> dict:
    return {
        "subject_id": device,
        "subject_type": "device",
        "kind": "electricity_meter",
        "tenant_id": tenant,
        "site_id": "plant-1",
        "timezone": "Asia/Kolkata",
        "updated_at": int(time.time() * 1000),
    }


def test_worker_survives_garbage_oversize_and_wrong_schema(env: Env, worker: WorkerProcess) -> None:
    enc = Encoder(SchemaStore.load())
    produce(
        env.bootstrap,
        env.topic("registry.devices"),
        [(b"m-1", enc(RecordType.DEVICE_REGISTRATION, _registration("m-1")))],
    )
    worker.wait_processed({"registry.devices": 1})
    now = int(time.time() * 1000)
    reading = {"device_id": "m-1", "ts": now - 60_000, "measurements": {"voltage_l1": 231.5, "frequency": 50.01}}
    sim = {
        "iccid": "8991101200003204514",
        "imsi": "404451234567890",
        "msisdn": "+919812345678",
        "period_start": now - 3_600_000,
        "period_end": now,
        "bytes_up": 1,
        "bytes_down": 2,
        "sms_mo": 0,
        "sms_mt": 0,
        "voice_seconds": 0,
        "csd_seconds": 0,
        "sessions": 1,
        "mcc": "404",
        "mnc": "45",
        "rat": "4G",
    }
    bad = [
        (b"m-1", b"\xff\xfe garbage \x00\x01"),
        (b"m-1", b"C3 but not really"),
        (b"m-1", b"\xc3\x01" + b"\x00" * 8 + b"unknown fingerprint"),
        (b"m-1", b"{ not json"),
        (b"m-1", json.dumps({"hello": "world"}).encode()),  # JSON, but no known record type
        (b"m-1", enc(RecordType.SIM_USAGE, sim)),  # a valid record of the wrong type for this topic
        (b"m-1", b"{" + b" " * 1_100_000 + b"}"),  # over MAX_MESSAGE_BYTES
        (b"m-1", None),  # empty value
    ]
    good = [(b"m-1", enc(RecordType.METER_READING, reading, WireFormat.JSON))]
    produce(env.bootstrap, env.topic("meter.readings"), bad + good)
    worker.wait_processed({"meter.readings": len(bad) + len(good)})

    assert worker.proc is not None and worker.proc.poll() is None
    assert worker.status()["ready"]
    rows = worker.query("SELECT quantity, value FROM readings WHERE device_id = 'm-1' ORDER BY quantity")
    assert rows == [["frequency", 50.01], ["voltage_l1", 231.5]]
    dead = consume_all(env.bootstrap, env.topic("deadletter"))
    assert count_reasons(dead) == {
        "undecodable": 3,
        "unknown_schema": 1,
        "schema_mismatch": 2,
        "oversize": 1,
        "empty_message": 1,
    }
    assert all(header(m, "dl.source.topic") == env.topic("meter.readings") for m in dead)
    # the original bytes are kept for replay
    assert {m.value() for m in dead if header(m, "dl.reason") == "undecodable"} >= {b"\xff\xfe garbage \x00\x01"}

    # and it keeps working afterwards
    later = {"device_id": "m-1", "ts": now - 30_000, "measurements": {"voltage_l1": 229.0}}
    produce(env.bootstrap, env.topic("meter.readings"), [(b"m-1", enc(RecordType.METER_READING, later))])
    worker.wait_processed({"meter.readings": len(bad) + len(good) + 1})
    assert worker.query("SELECT count() FROM readings WHERE device_id = 'm-1'") == [[3]]


def test_one_bad_channel_keeps_the_good_ones_and_batch_rejects_carry_the_reading(
    env: Env, worker: WorkerProcess
) -> None:
    enc = Encoder(SchemaStore.load())
    produce(
        env.bootstrap,
        env.topic("registry.devices"),
        [(d.encode(), enc(RecordType.DEVICE_REGISTRATION, _registration(d))) for d in ("m-1", "m-2")],
    )
    worker.wait_processed({"registry.devices": 2})
    now = int(time.time() * 1000)
    batch = {
        "gateway_id": "gw-1",
        "readings": [
            {"device_id": "m-1", "ts": now - 60_000, "measurements": {"voltage_l1": 612.0, "voltage_l2": 230.0}},
            {"device_id": "m-2", "ts": now - 60_000, "measurements": {"frequency": 50.0}},
            {"device_id": "ghost", "ts": now - 60_000, "measurements": {"frequency": 50.0}},
        ],
    }
    produce(env.bootstrap, env.topic("meter.readings"), [(b"gw-1", enc(RecordType.METER_READING_BATCH, batch))])
    worker.wait_processed({"meter.readings": 1})
    rows = worker.query("SELECT device_id, quantity FROM readings ORDER BY device_id, quantity")
    assert rows == [["m-1", "voltage_l2"], ["m-2", "frequency"]]
    dead = consume_all(env.bootstrap, env.topic("deadletter"))
    by_reason = {header(m, "dl.reason"): m for m in dead}
    assert set(by_reason) == {"out_of_range", "unknown_device"}
    out_of_range = json.loads(by_reason["out_of_range"].value())
    assert out_of_range["device_id"] == "m-1" and out_of_range["measurements"] == {"voltage_l1": 612.0}
    assert header(by_reason["out_of_range"], "dl.record_index") == "0"
    assert header(by_reason["unknown_device"], "dl.record_index") == "2"
    assert "612" in (header(by_reason["out_of_range"], "dl.detail") or "")
