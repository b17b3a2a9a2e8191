"""The bulk Avro path of decode_readings gives exactly what the per-message path gives."""

from __future__ import annotations

import random

import pytest
from polars.testing import assert_frame_equal

from pipeline.codecs import Decoder, Encoder, RecordType, SchemaStore, WireFormat
from pipeline.codecs.bulk import decode_readings_bulk
from pipeline.codecs.frames import _decode_readings_each, decode_readings
from pipeline.envelope import RawMessage

BASE = 1_790_000_000_000
CHANNELS = {"voltage_l1": 230.1, "current_l1": 5.25, "active_power": 1204.5, "active_energy_import": 12345.6}


@pytest.fixture(scope="module")
def codec() -> tuple[Encoder, Decoder]:
    store = SchemaStore.load()
    store.register_id(7, RecordType.METER_READING)
    return Encoder(store), Decoder(store)


def _reading(i: int, **extra: object) -> dict:
    return {"device_id": f"dev-{i:04d}", "ts": BASE + i * 1000, "measurements": dict(CHANNELS), **extra}


def _raw(values: list[bytes | None]) -> list[RawMessage]:
    return [RawMessage("t", i % 3, 100 + i, None, v) for i, v in enumerate(values)]


def _same(messages: list[RawMessage], decoder: Decoder) -> None:
    bulk, bulk_rejects = decode_readings(messages, decoder)
    each, each_rejects = _decode_readings_each(messages, decoder)
    assert_frame_equal(bulk, each)

    def key(r: object) -> tuple:
        return (r.reason, r.detail, r.original.offset, r.record_index, r.payload)

    assert [key(r) for r in bulk_rejects] == [key(r) for r in each_rejects]


def _corpus(enc: Encoder) -> list[bytes | None]:
    single = RecordType.METER_READING
    batch = RecordType.METER_READING_BATCH
    good = [enc(single, _reading(i, seq=i, quality=i % 2, event_id=f"e{i}" if i % 3 else None)) for i in range(20)]
    batches = [
        enc(batch, {"gateway_id": f"gw{j}", "sent_at": BASE if j % 2 else None,
                    "readings": [_reading(j * 10 + k, seq=-k) for k in range(5)]})
        for j in range(6)
    ]  # fmt: skip
    odd = [
        enc(single, _reading(900, quality=-7, seq=2**62, measurements={"x": float("nan"), "y": float("inf")})),
        enc(single, _reading(901, event_id="é✓"), WireFormat.CONFLUENT, schema_id=7),
        enc(single, _reading(902), WireFormat.JSON),
        enc(single, _reading(903, measurements={})),  # rejected: no measurements
        enc(batch, {"gateway_id": "empty", "readings": []}),  # rejected: empty batch
        enc(batch, {"gateway_id": "g", "readings": [_reading(904), _reading(905, measurements={})]}),
        good[0] + b"\x00",  # trailing byte: undecodable
        good[1][:-3],  # truncated
        good[2][:12] + b"\xff\xfe" + good[2][14:],  # invalid UTF-8 in the device id
        b"\xc3\x01" + b"\x00" * 8 + b"junk",  # unknown fingerprint
        None,
        b"",
        b"not avro at all",
    ]
    return good + batches + odd


def test_all_good_messages_take_the_bulk_path(codec: tuple[Encoder, Decoder]) -> None:
    enc, dec = codec
    values = _corpus(enc)[:26]
    frame, rest = decode_readings_bulk(_raw(values), dec)
    assert frame is not None and rest == []
    _same(_raw(values), dec)


def test_bad_messages_fall_back_and_results_are_identical(codec: tuple[Encoder, Decoder]) -> None:
    enc, dec = codec
    corpus = _corpus(enc)
    rng = random.Random(3)
    for _ in range(60):
        values = rng.sample(corpus, rng.randint(1, len(corpus)))
        _same(_raw(values), dec)


def test_a_trailing_byte_is_never_accepted_by_the_bulk_path(codec: tuple[Encoder, Decoder]) -> None:
    enc, dec = codec
    good = enc(RecordType.METER_READING, _reading(1))
    messages = _raw([good, good + b"\x02", enc(RecordType.METER_READING, _reading(2))])
    frame, rejects = decode_readings(messages, dec)
    assert [r.original.offset for r in rejects] == [101]
    assert sorted(set(frame["msg_idx"].to_list())) == [0, 2]


@pytest.mark.parametrize("n", [1, 2, 3])
def test_small_polls_with_default_fields(codec: tuple[Encoder, Decoder], n: int) -> None:
    """One to three single readings with every optional field null (as the Encoder fills them)."""
    enc, dec = codec
    one = {"ts": BASE - 30_000, "measurements": {"voltage_l1": 229.0}}
    values = [enc(RecordType.METER_READING, {"device_id": f"m-{i}", **one}) for i in range(n)]
    frame, rest = decode_readings_bulk(_raw(values), dec)
    assert frame is not None and rest == [] and frame.height == n
    _same(_raw(values), dec)
