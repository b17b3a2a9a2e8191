"""Codecs: schemas, fingerprints, wire-format detection, round trips, fuzzing, columnar decoding."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import polars as pl
import pytest
from fastavro.schema import fingerprint as fastavro_fingerprint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.codecs import (
    READINGS_SCHEMA,
    SIM_USAGE_SCHEMA,
    Decoder,
    Encoder,
    RecordType,
    SchemaStore,
    WireFormat,
    decode_readings,
    decode_registrations,
    decode_sim_usage,
    rabin_fingerprint,
)
from pipeline.envelope import RawMessage, Reason, Rejected
from pipeline.errors import CodecError

STORE = SchemaStore.load()
STORE.register_id(11, RecordType.METER_READING)
STORE.register_id(12, RecordType.METER_READING_BATCH)
STORE.register_id(13, RecordType.SIM_USAGE)
STORE.register_id(14, RecordType.DEVICE_REGISTRATION)
STORE.register_id(15, RecordType.ALERT)
ENCODE = Encoder(STORE)
DECODE = Decoder(STORE)
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------- strategies

LONGS = st.integers(-(2**63), 2**63 - 1)
INTS = st.integers(-(2**31), 2**31 - 1)
DOUBLES = st.floats(allow_nan=True, allow_infinity=True)
TEXT = st.text(max_size=24)
OPT_TEXT = st.none() | TEXT
DOUBLE_MAP = st.dictionaries(TEXT, DOUBLES, max_size=12)

READING = st.fixed_dictionaries(
    {"device_id": TEXT, "ts": LONGS, "measurements": DOUBLE_MAP,
     "event_id": OPT_TEXT, "seq": st.none() | LONGS, "quality": st.none() | INTS}
)  # fmt: skip
BATCH = st.fixed_dictionaries(
    {"gateway_id": TEXT, "sent_at": st.none() | LONGS, "readings": st.lists(READING, max_size=6)}
)
SIM_USAGE = st.fixed_dictionaries(
    {"iccid": TEXT, "imsi": TEXT, "msisdn": TEXT, "imei": OPT_TEXT, "period_start": LONGS, "period_end": LONGS,
     **{k: LONGS for k in ("bytes_up", "bytes_down", "sms_mo", "sms_mt", "voice_seconds", "csd_seconds",
                           "sessions")},
     "mcc": TEXT, "mnc": TEXT, "rat": TEXT, "plan_id": OPT_TEXT}
)  # fmt: skip
REPLACEMENT = st.fixed_dictionaries({"old_final": DOUBLE_MAP, "new_first": DOUBLE_MAP, "at": LONGS})
REGISTRATION = st.fixed_dictionaries(
    {"subject_id": TEXT, "subject_type": st.sampled_from(["device", "sim"]),
     "kind": st.sampled_from(["electricity_meter", "water_meter", "gas_meter", "generator", "hvac", "gateway",
                              "sim"]),
     "tenant_id": TEXT, "site_id": TEXT, "branch": OPT_TEXT, "timezone": TEXT,
     "latitude": st.none() | DOUBLES, "longitude": st.none() | DOUBLES, "gateway_id": OPT_TEXT,
     "sim_iccid": OPT_TEXT, "key_id": OPT_TEXT, "rated_power_w": st.none() | DOUBLES,
     "expected_period_s": st.none() | LONGS, "nominal_voltage": st.none() | DOUBLES,
     "nominal_frequency": st.none() | DOUBLES, "tank_capacity_l": st.none() | DOUBLES,
     "register_ceilings": DOUBLE_MAP, "tariff_id": OPT_TEXT, "tariff": OPT_TEXT, "plan_id": OPT_TEXT,
     "plan_allowance_bytes": st.none() | LONGS, "plan_cycle_start_day": st.none() | INTS,
     "stationary": st.none() | st.booleans(), "attributes": st.dictionaries(TEXT, TEXT, max_size=5),
     "event": st.sampled_from(["registered", "updated", "replaced"]), "replaced": st.none() | REPLACEMENT,
     "updated_at": LONGS}
)  # fmt: skip
ALERT = st.fixed_dictionaries(
    {"alert_id": TEXT, "tenant_id": TEXT, "subject_id": TEXT, "subject_type": st.sampled_from(["device", "sim"]),
     "rule": TEXT, "severity": st.sampled_from(["info", "warning", "critical"]),
     "state": st.sampled_from(["raised", "updated", "cleared"]), "site_id": OPT_TEXT, "first_seen": LONGS,
     "last_seen": LONGS, "count": INTS, "observed": st.none() | DOUBLES, "threshold": st.none() | DOUBLES,
     "message": TEXT, "attributes": st.dictionaries(TEXT, TEXT, max_size=5)}
)  # fmt: skip
RECORDS = {
    RecordType.METER_READING: READING,
    RecordType.METER_READING_BATCH: BATCH,
    RecordType.SIM_USAGE: SIM_USAGE,
    RecordType.DEVICE_REGISTRATION: REGISTRATION,
    RecordType.ALERT: ALERT,
}


SIM = {"iccid": "8944", "imsi": "2341", "msisdn": "44", "period_start": 0, "period_end": 1,
       **dict.fromkeys(("bytes_up", "bytes_down", "sms_mo", "sms_mt", "voice_seconds", "csd_seconds", "sessions"), 0),
       "mcc": "234", "mnc": "15", "rat": "LTE-M"}  # fmt: skip
ALERT_RECORD = {"alert_id": "a", "tenant_id": "t", "subject_id": "s", "subject_type": "device", "rule": "r",
                "severity": "info", "state": "raised", "first_seen": 0, "last_seen": 1, "count": 1,
                "message": "m"}  # fmt: skip


def comparable(value: Any) -> Any:
    """Make NaN equal to NaN (and keep the sign of zero) so records compare with ==."""
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else (value, math.copysign(1.0, value))
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


def reading(device: str = "m1", ts: int = 1_700_000_000_000, **measurements: float) -> dict[str, Any]:
    return {"device_id": device, "ts": ts, "measurements": measurements or {"active_power": 1.0}}


def msg(value: bytes | None, offset: int = 0, key: bytes | None = None) -> RawMessage:
    return RawMessage("telemetry.meter.readings", 0, offset, key, value)


def reason_of(value: bytes | None, decoder: Decoder = DECODE) -> str:
    with pytest.raises(CodecError) as info:
        decoder(value)
    return info.value.reason


# ---------------------------------------------------------------- schemas and fingerprints


def test_fingerprint_matches_avro_spec_vector() -> None:
    # Avro's share/test/data/schema-tests.txt: the canonical form "null" has fingerprint 7195948357588979594
    assert rabin_fingerprint(b'"null"') == (7195948357588979594).to_bytes(8, "little", signed=True)


@pytest.mark.parametrize("rt", list(RecordType))
def test_fingerprint_matches_fastavro_and_header(rt: RecordType) -> None:
    fp = STORE.fingerprint(rt)
    assert fp == bytes.fromhex(fastavro_fingerprint(STORE.canonical(rt), "CRC-64-AVRO"))
    assert STORE.by_fingerprint(fp) is rt
    example = {RecordType.METER_READING: reading(), RecordType.METER_READING_BATCH: {"gateway_id": "g",
               "readings": []}}.get(rt)  # fmt: skip
    if example is not None:
        assert ENCODE(rt, example)[:10] == b"\xc3\x01" + fp


def test_batch_inlines_the_same_reading_schema() -> None:
    inline = json.loads(STORE.schema_str(RecordType.METER_READING_BATCH))["fields"][2]["type"]["items"]
    assert inline == json.loads(STORE.schema_str(RecordType.METER_READING))
    assert "timestamp-millis" not in "".join(STORE.schema_str(rt) for rt in RecordType)


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("rt", list(RecordType))
@FUZZ
@given(data=st.data())
def test_round_trip_every_format(rt: RecordType, data: st.DataObject) -> None:
    record = data.draw(RECORDS[rt])
    for fmt in WireFormat:
        got_rt, got = DECODE(ENCODE(rt, record, fmt))
        assert got_rt is rt
        assert comparable(got) == comparable(record), fmt


def test_round_trip_big_map_and_unicode() -> None:
    record = reading("zähler-東京-🔌", **{f"channel_{i}": float(i) / 7 for i in range(2000)})
    record["measurements"].update({"nan": math.nan, "inf": math.inf, "-inf": -math.inf})
    for fmt in WireFormat:
        _, got = DECODE(ENCODE(RecordType.METER_READING, record, fmt))
        assert comparable(got["measurements"]) == comparable(record["measurements"])
        assert got["device_id"] == "zähler-東京-🔌"


def test_encoder_checks_and_normalises() -> None:
    with pytest.raises(CodecError) as info:
        ENCODE(RecordType.METER_READING, {"ts": 1, "measurements": {}})
    assert (info.value.reason, "device_id" in info.value.detail) == (Reason.SCHEMA_MISMATCH, True)
    with pytest.raises(CodecError, match=r"measurements\.x"):
        ENCODE(RecordType.METER_READING, reading(x="1.0"))  # type: ignore[arg-type]
    with pytest.raises(CodecError) as info:
        Encoder(SchemaStore.load())(RecordType.ALERT, {}, WireFormat.CONFLUENT)
    assert info.value.reason == Reason.SCHEMA_MISMATCH
    with pytest.raises(CodecError) as info:
        Encoder(SchemaStore.load())(RecordType.METER_READING, reading(), WireFormat.CONFLUENT)
    assert info.value.reason == Reason.UNKNOWN_SCHEMA
    wire = ENCODE(RecordType.METER_READING, reading(), WireFormat.CONFLUENT, schema_id=11)
    assert wire[:5] == b"\x00\x00\x00\x00\x0b"
    _, got = DECODE(ENCODE(RecordType.METER_READING, {**reading(), "ts": "2024-01-01T00:00:00Z", "extra": 1}))
    assert got == {**reading(), "ts": 1_704_067_200_000, "event_id": None, "seq": None, "quality": None}


# ---------------------------------------------------------------- format detection


AVRO_BODY = ENCODE(RecordType.METER_READING, reading())[10:]
DETECTION = [
    ("null", None, Reason.EMPTY),
    ("empty", b"", Reason.EMPTY),
    ("single-object", b"\xc3\x01" + STORE.fingerprint(RecordType.METER_READING) + AVRO_BODY, "MeterReading"),
    ("single-object unknown fp", b"\xc3\x01" + b"\x00" * 8 + AVRO_BODY, Reason.UNKNOWN_SCHEMA),
    ("single-object short header", b"\xc3\x01\x01\x02", Reason.UNDECODABLE),
    ("single-object truncated", b"\xc3\x01" + STORE.fingerprint(RecordType.METER_READING) + AVRO_BODY[:-3],
     Reason.UNDECODABLE),
    ("single-object trailing byte", b"\xc3\x01" + STORE.fingerprint(RecordType.METER_READING) + AVRO_BODY + b"\0",
     Reason.UNDECODABLE),
    ("confluent", b"\x00\x00\x00\x00\x0b" + AVRO_BODY, "MeterReading"),
    ("confluent wrong schema", b"\x00\x00\x00\x00\x0d" + AVRO_BODY, Reason.UNDECODABLE),
    ("confluent unknown id", b"\x00\x00\x00\x01\x00" + AVRO_BODY, Reason.UNKNOWN_SCHEMA),
    ("confluent short header", b"\x00\x00\x0b", Reason.UNDECODABLE),
    ("json", json.dumps(reading()).encode(), "MeterReading"),
    ("json leading whitespace", b" \r\n\t" + json.dumps(reading()).encode(), "MeterReading"),
    ("json batch", b'{"gateway_id":"g","readings":[]}', "MeterReadingBatch"),
    ("json sim", json.dumps({"iccid": "1", "period_start": 0}).encode(), Reason.SCHEMA_MISMATCH),
    ("json alert has subject_id too", json.dumps({"alert_id": "a", "subject_id": "s"}).encode(),
     Reason.SCHEMA_MISMATCH),
    ("json unknown object", b'{"hello": 1}', Reason.SCHEMA_MISMATCH),
    ("json broken", b'{"device_id": ', Reason.UNDECODABLE),
    ("json not utf-8", b'{"device_id": "\xff"}', Reason.UNDECODABLE),
    ("json array", b"[1, 2]", Reason.UNDECODABLE),
    ("json trailing data", b"{} {}", Reason.UNDECODABLE),
    ("json deep nesting", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, Reason.UNDECODABLE),
    ("text", b"hello", Reason.UNDECODABLE),
    ("other magic", b"\xc3\x02" + b"\x00" * 20, Reason.UNDECODABLE),
]  # fmt: skip


@pytest.mark.parametrize(("value", "expected"), [c[1:] for c in DETECTION], ids=[c[0] for c in DETECTION])
def test_format_detection(value: bytes | None, expected: str) -> None:
    if expected in set(RecordType):
        assert DECODE(value)[0] == expected
    else:
        assert reason_of(value) == expected


def test_oversize_is_checked_before_anything_else() -> None:
    small = Decoder(STORE, max_bytes=16)
    assert reason_of(b"\xc3\x01" + b"\x00" * 15, small) == Reason.OVERSIZE
    assert reason_of(b"\x00" * 17, small) == Reason.OVERSIZE
    assert reason_of(b"x" * 16, small) == Reason.UNDECODABLE


def test_registry_lookup_by_canonical_form() -> None:
    @dataclass
    class Registered:
        schema_str: str
        schema_type: str | None = "AVRO"
        references: list[Any] | None = None

    class NotFound(Exception):
        http_status_code = 404

    class Registry:
        calls = 0

        def get_schema(self, schema_id: int) -> Registered:
            self.calls += 1
            if schema_id == 100:  # same schema, spelled differently (doc, whitespace)
                raw = json.loads(STORE.schema_str(RecordType.SIM_USAGE))
                return Registered(json.dumps({**raw, "doc": "registered copy"}, indent=2))
            if schema_id == 101:
                return Registered('{"type": "record", "name": "Other", "fields": []}')
            if schema_id == 102:
                raise ConnectionError("registry down")
            raise NotFound

    registry = Registry()
    store = SchemaStore.load(registry=registry)
    assert store.by_id(100) is RecordType.SIM_USAGE
    assert store.by_id(100) is RecordType.SIM_USAGE and registry.calls == 1  # cached
    assert store.by_id(101) is None and store.by_id(999) is None
    with pytest.raises(ConnectionError):
        store.by_id(102)
    assert reason_of(b"\x00\x00\x00\x00\x66" + b"\x00", Decoder(store)) == Reason.UNKNOWN_SCHEMA
    wire = Encoder(store)(RecordType.SIM_USAGE, SIM, WireFormat.CONFLUENT, schema_id=100)
    assert Decoder(store)(wire)[1]["iccid"] == "8944"


# ---------------------------------------------------------------- JSON specifics


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (1_700_000_000_123, 1_700_000_000_123),
        ("2024-01-01T00:00:00Z", 1_704_067_200_000),
        ("2024-01-01T01:00:00+01:00", 1_704_067_200_000),
        ("2024-01-01T00:00:00.999999+00:00", 1_704_067_200_999),
        ("1969-12-31T23:59:59.9995Z", -1),
        ("2024-01-01T00:00:00", Reason.SCHEMA_MISMATCH),
        ("2024-01-01", Reason.SCHEMA_MISMATCH),
        ("yesterday", Reason.SCHEMA_MISMATCH),
        (1.7e12, Reason.SCHEMA_MISMATCH),
        (True, Reason.SCHEMA_MISMATCH),
        (None, Reason.SCHEMA_MISMATCH),
        (2**63, Reason.SCHEMA_MISMATCH),
    ],
)
def test_json_timestamps(ts: object, expected: object) -> None:
    value = json.dumps({**reading(), "ts": ts}).encode()
    if isinstance(expected, int):
        assert DECODE(value)[1]["ts"] == expected
    else:
        with pytest.raises(CodecError, match=r"^schema_mismatch: ts: ") as info:
            DECODE(value)
        assert info.value.reason == expected


def test_json_measurement_values_are_lenient() -> None:
    body = b'{"device_id":"m","ts":0,"measurements":{"a":"x","b":null,"c":true,"d":NaN,"e":-Infinity,"f":3,' \
           b'"g":{"h":1},"i":1e999,"j":' + b"9" * 400 + b"}}"  # fmt: skip
    got = DECODE(body)[1]["measurements"]
    assert got.keys() == set("abcdefgij")
    assert [got[k] for k in "abcgj"] == [None] * 5
    assert math.isnan(got["d"]) and got["e"] == -math.inf and got["f"] == 3.0 and got["i"] == math.inf


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"device_id": None}, "device_id"),
        ({"device_id": 7}, "device_id"),
        ({"device_id": "\ud800"}, "device_id"),
        ({"measurements": [1.0]}, "measurements"),
        ({"seq": "7"}, "seq"),
        ({"seq": 1.5}, "seq"),
        ({"quality": 2**31}, "quality"),
        ({"event_id": 5}, "event_id"),
    ],
)
def test_json_wrong_types_name_the_field(patch: dict[str, Any], field: str) -> None:
    with pytest.raises(CodecError) as info:
        DECODE(json.dumps({**reading(), **patch}).encode())
    assert info.value.reason == Reason.SCHEMA_MISMATCH
    assert info.value.detail.startswith(field)


def test_decoder_call_refuses_a_partly_bad_batch() -> None:
    value = json.dumps({"gateway_id": "g", "readings": [reading(), {"ts": 1}, {"ts": 2}]}).encode()
    with pytest.raises(CodecError, match=r"readings\[1\]\.device_id: missing required field \(and 1 more"):
        DECODE(value)
    decoded = DECODE.decode_partial(value)
    assert [b.index for b in decoded.bad] == [1, 2] and decoded.record["readings"][1:] == [None, None]


# ---------------------------------------------------------------- fuzzing


VALID = [ENCODE(rt, rec, fmt) for rt, rec in [
    (RecordType.METER_READING, {**reading(a=1.5, b=2.5), "event_id": "e", "seq": 3, "quality": 0}),
    (RecordType.METER_READING_BATCH, {"gateway_id": "g", "sent_at": 5, "readings": [reading(), reading("m2")]}),
    (RecordType.ALERT, {**ALERT_RECORD, "attributes": {"k": "v"}}),
] for fmt in WireFormat]  # fmt: skip


def decodes_or_codec_error(value: bytes) -> None:
    try:
        DECODE(value)
    except CodecError as exc:
        assert exc.reason in set(Reason)


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(value: bytes) -> None:
    decodes_or_codec_error(value)


@FUZZ
@given(
    st.sampled_from([b"\xc3\x01" + STORE.fingerprint(rt) for rt in RecordType] + [b"\x00\x00\x00\x00\x0c", b"{"]),
    st.binary(max_size=200),
)
def test_fuzz_valid_header_random_body(header: bytes, body: bytes) -> None:
    decodes_or_codec_error(header + body)


@FUZZ
@given(st.sampled_from(VALID), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
       st.integers(0, 10_000), st.binary(max_size=8))  # fmt: skip
def test_fuzz_mutated_valid_encodings(value: bytes, flips: list[tuple[int, int]], cut: int, tail: bytes) -> None:
    mutated = bytearray(value)
    for pos, byte in flips:
        mutated[pos % len(mutated)] = byte
    mutated = mutated[: max(1, len(mutated) - cut % 8)] + tail
    decodes_or_codec_error(bytes(mutated))
    frame, rejected = decode_readings([msg(bytes(mutated))], DECODE)
    assert frame.schema == pl.Schema(READINGS_SCHEMA) and len(rejected) <= 2 + frame.height


# ---------------------------------------------------------------- decode_readings / sim usage / registrations


def test_decode_readings_mixed_poll() -> None:
    single = {**reading("m1", 1000, a=1.0, b=math.inf), "event_id": "e1", "seq": 7, "quality": 0}
    bad_reading = {"ts": "2024-01-01T00:00:00Z", "measurements": {"a": 1}}
    json_batch = {"gateway_id": "gw", "readings": [
        {"device_id": "m2", "ts": "1970-01-01T00:00:02Z", "measurements": {"a": "oops", "b": 2}},
        bad_reading,
        {"device_id": "m3", "ts": 3000, "measurements": {"c": 3.5}, "seq": 9},
        {"device_id": "m4", "ts": 4000, "measurements": {}},
    ]}  # fmt: skip
    avro_batch = {"gateway_id": "gw3", "readings": [reading("m6", 6000, z=6.0)]}
    values = [
        ENCODE(RecordType.METER_READING, single),
        json.dumps(json_batch).encode(),
        b"\xde\xad\xbe\xef",
        b"{" + b" " * 1_048_576 + b"}",
        ENCODE(RecordType.SIM_USAGE, SIM, WireFormat.CONFLUENT),
        None,
        ENCODE(RecordType.METER_READING, {**reading("m5"), "measurements": {}}, WireFormat.JSON),
        ENCODE(RecordType.METER_READING_BATCH, {"gateway_id": "gw2", "readings": []}),
        ENCODE(RecordType.METER_READING_BATCH, avro_batch, WireFormat.CONFLUENT),
    ]
    messages = [msg(value, offset) for offset, value in enumerate(values)]
    frame, rejected = decode_readings(messages, DECODE)
    assert frame.schema == pl.Schema(READINGS_SCHEMA)
    assert frame.rows() == [
        (0, -1, "m1", 1000, "a", 1.0, 7, "e1", 0, None),
        (0, -1, "m1", 1000, "b", math.inf, 7, "e1", 0, None),
        (1, 0, "m2", 2000, "a", None, None, None, None, "gw"),
        (1, 0, "m2", 2000, "b", 2.0, None, None, None, "gw"),
        (1, 2, "m3", 3000, "c", 3.5, 9, None, None, "gw"),
        (8, 0, "m6", 6000, "z", 6.0, None, None, None, "gw3"),
    ]
    summary = [(r.original.offset, r.reason, r.record_index, r.payload) for r in rejected]
    assert summary == [
        (1, Reason.SCHEMA_MISMATCH, 1, json.dumps(bad_reading, separators=(",", ":")).encode()),
        (1, Reason.SCHEMA_MISMATCH, 3,
         b'{"device_id":"m4","ts":4000,"measurements":{},"event_id":null,"seq":null,"quality":null}'),
        (2, Reason.UNDECODABLE, -1, None),
        (3, Reason.OVERSIZE, -1, None),
        (4, Reason.SCHEMA_MISMATCH, -1, None),
        (5, Reason.EMPTY, -1, None),
        (6, Reason.SCHEMA_MISMATCH, -1, None),
        (7, Reason.SCHEMA_MISMATCH, -1, None),
    ]  # fmt: skip
    assert rejected[0].detail == "readings[1].device_id: missing required field"
    assert rejected[6].detail == "no measurements"
    assert all(isinstance(r, Rejected) and r.original is messages[r.original.offset] for r in rejected)
    # the dead-letter payload of a bad reading replays as that reading alone
    assert reason_of(rejected[0].payload) == Reason.SCHEMA_MISMATCH


def test_decode_readings_empty_input() -> None:
    frame, rejected = decode_readings([], DECODE)
    assert frame.schema == pl.Schema(READINGS_SCHEMA) and frame.height == 0 and rejected == []


def test_decode_sim_usage() -> None:
    sim = {"iccid": "89440", "imsi": "234150", "msisdn": "447700", "imei": None,
           "period_start": "2024-01-01T00:00:00Z", "period_end": 1_704_070_800_000, "bytes_up": 10,
           "bytes_down": 20, "sms_mo": 1, "sms_mt": 2, "voice_seconds": 3, "csd_seconds": 4, "sessions": 5,
           "mcc": "234", "mnc": "15", "rat": "LTE-M", "plan_id": "p1"}  # fmt: skip
    messages = [msg(ENCODE(RecordType.SIM_USAGE, sim, fmt)) for fmt in WireFormat]
    messages.append(msg(ENCODE(RecordType.METER_READING, reading())))
    frame, rejected = decode_sim_usage(messages, DECODE)
    assert frame.schema == pl.Schema(SIM_USAGE_SCHEMA)
    row = ("89440", "234150", "447700", None, 1_704_067_200_000, 1_704_070_800_000, 10, 20, 1, 2, 3, 4, 5,
           "234", "15", "LTE-M", "p1")  # fmt: skip
    assert frame.rows() == [(0, *row), (1, *row), (2, *row)]
    assert [(r.reason, r.original is messages[3]) for r in rejected] == [(Reason.SCHEMA_MISMATCH, True)]
    assert decode_sim_usage([], DECODE)[0].schema == pl.Schema(SIM_USAGE_SCHEMA)


def test_decode_registrations() -> None:
    reg = {"subject_id": "m1", "subject_type": "device", "kind": "electricity_meter", "tenant_id": "t",
           "site_id": "s", "updated_at": 0, "tariff": json.dumps({"flat": 0.3})}  # fmt: skip
    messages = [
        msg(ENCODE(RecordType.DEVICE_REGISTRATION, reg), key=b"m1"),
        msg(None, key=b"m1"),
        msg(b"", key=b"m2"),
        msg(ENCODE(RecordType.DEVICE_REGISTRATION, reg, WireFormat.JSON)),
        msg(None),
        msg(ENCODE(RecordType.DEVICE_REGISTRATION, reg), key=b"\xff"),
        msg(ENCODE(RecordType.ALERT, ALERT_RECORD), key=b"a"),
        msg(b"garbage", key=b"m3"),
    ]
    records, rejected = decode_registrations(messages, DECODE)
    assert [(key, rec is None, i) for key, rec, i in records] == [
        ("m1", False, 0), ("m1", True, 1), ("m2", True, 2), ("m1", False, 3)
    ]  # fmt: skip
    first = records[0][1]
    assert first is not None and first["timezone"] == "UTC" and first["event"] == "registered"
    assert first["register_ceilings"] == {} and first["attributes"] == {} and first["replaced"] is None
    assert [r.reason for r in rejected] == [
        Reason.EMPTY, Reason.UNDECODABLE, Reason.SCHEMA_MISMATCH, Reason.UNDECODABLE
    ]  # fmt: skip
