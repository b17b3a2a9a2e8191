"""Decode a poll of Kafka messages into columnar frames plus rejections (the decode stage's hot path).

Columns are gathered in plain lists and turned into one DataFrame at the end;
a reading's per-reading fields are stored once and repeated per channel by polars.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import polars as pl

from pipeline.codecs.bulk import decode_readings_bulk
from pipeline.codecs.codec import Decoder
from pipeline.codecs.store import RecordType
from pipeline.envelope import RawMessage, Reason, Rejected
from pipeline.errors import CodecError

__all__ = [
    "READINGS_SCHEMA",
    "SIM_USAGE_SCHEMA",
    "decode_readings",
    "decode_registrations",
    "decode_sim_usage",
]

READINGS_SCHEMA: dict[str, pl.DataType] = {
    "msg_idx": pl.Int32(), "rec_idx": pl.Int32(), "device_id": pl.Utf8(), "ts_ms": pl.Int64(),
    "quantity": pl.Utf8(), "value": pl.Float64(), "seq": pl.Int64(), "event_id": pl.Utf8(),
    "quality": pl.Int32(), "gateway_id": pl.Utf8(),
}  # fmt: skip
_PER_READING = ("msg_idx", "rec_idx", "device_id", "ts_ms", "seq", "event_id", "quality", "gateway_id")

_SIM_STRINGS = ("iccid", "imsi", "msisdn", "imei")
_SIM_COUNTERS = ("bytes_up", "bytes_down", "sms_mo", "sms_mt", "voice_seconds", "csd_seconds", "sessions")
_SIM_NETWORK = ("mcc", "mnc", "rat", "plan_id")
SIM_USAGE_SCHEMA: dict[str, pl.DataType] = {
    "msg_idx": pl.Int32(),
    **{name: pl.Utf8() for name in _SIM_STRINGS},
    "period_start_ms": pl.Int64(),
    "period_end_ms": pl.Int64(),
    **{name: pl.Int64() for name in _SIM_COUNTERS},
    **{name: pl.Utf8() for name in _SIM_NETWORK},
}
_SIM_FIELDS = ("msg_idx", *_SIM_STRINGS, "period_start", "period_end", *_SIM_COUNTERS, *_SIM_NETWORK)
_READING_TYPES = (RecordType.METER_READING, RecordType.METER_READING_BATCH)


def _json_payload(item: object) -> bytes:
    """One reading re-encoded alone for the dead-letter topic (ASCII JSON, NaN/Infinity tokens kept)."""
    return json.dumps(item, separators=(",", ":")).encode("ascii")


def _rejected(exc: CodecError, msg: RawMessage) -> Rejected:
    return Rejected(Reason(exc.reason), exc.detail, msg)


def decode_readings(messages: Sequence[RawMessage], decoder: Decoder) -> tuple[pl.DataFrame, list[Rejected]]:
    """Decode ``meter.readings`` messages into one long frame (one row per reading and channel).

    See :data:`READINGS_SCHEMA` for the columns. ``rec_idx`` is -1 for a single
    reading, else the reading's index in its batch. A failed message gives one
    whole-message :class:`Rejected`; a bad reading of a batch gives one with its
    ``record_index`` and the reading alone as JSON ``payload``.

    Avro messages take the bulk path (:mod:`pipeline.codecs.bulk`: all bodies of
    one schema decoded at once into columns); every message it does not vouch
    for takes the per-message path, so the result is the same either way.
    """
    frame, rest = decode_readings_bulk(messages, decoder)
    if frame is None:
        return _decode_readings_each(messages, decoder)
    if not rest:
        return frame, []
    slow, rejected = _decode_readings_each([messages[i] for i in rest], decoder)
    if slow.height:
        slow = slow.with_columns(pl.Series("msg_idx", rest, dtype=pl.Int32).gather(slow.get_column("msg_idx")))
        frame = pl.concat([frame, slow]).sort("msg_idx", maintain_order=True)
    return frame, rejected


def _decode_readings_each(
    messages: Sequence[RawMessage], decoder: Decoder
) -> tuple[pl.DataFrame, list[Rejected]]:
    """The per-message path: any wire format, every failure becomes a :class:`Rejected`."""
    cols: dict[str, list[Any]] = {name: [] for name in _PER_READING}
    msg_idx, rec_idx, device_id, ts_ms = cols["msg_idx"], cols["rec_idx"], cols["device_id"], cols["ts_ms"]
    seq, event_id, quality, gateway_id = cols["seq"], cols["event_id"], cols["quality"], cols["gateway_id"]
    counts: list[int] = []
    quantities: list[str] = []
    values: list[float | None] = []
    rejected: list[Rejected] = []
    decode = decoder.decode_partial
    single, batch = RecordType.METER_READING, RecordType.METER_READING_BATCH
    for i, msg in enumerate(messages):
        try:
            rt, record, bad = decode(msg.value)
        except CodecError as exc:
            rejected.append(_rejected(exc, msg))
            continue
        if rt is single:
            m = record["measurements"]
            if not m:
                rejected.append(Rejected(Reason.SCHEMA_MISMATCH, "no measurements", msg))
                continue
            msg_idx.append(i)
            rec_idx.append(-1)
            device_id.append(record["device_id"])
            ts_ms.append(record["ts"])
            seq.append(record["seq"])
            event_id.append(record["event_id"])
            quality.append(record["quality"])
            gateway_id.append(None)
            counts.append(len(m))
            quantities.extend(m)
            values.extend(m.values())
        elif rt is batch:
            gateway = record["gateway_id"]
            readings = record["readings"]
            if not readings:
                rejected.append(Rejected(Reason.SCHEMA_MISMATCH, "batch has no readings", msg))
                continue
            refused = [
                Rejected(Reason.SCHEMA_MISMATCH, b.detail, msg, record_index=b.index, payload=_json_payload(b.item))
                for b in bad
            ]
            for j, r in enumerate(readings):
                if r is None:  # listed in ``bad``
                    continue
                m = r["measurements"]
                if not m:
                    refused.append(Rejected(Reason.SCHEMA_MISMATCH, f"readings[{j}]: no measurements", msg,
                                            record_index=j, payload=_json_payload(r)))  # fmt: skip
                    continue
                msg_idx.append(i)
                rec_idx.append(j)
                device_id.append(r["device_id"])
                ts_ms.append(r["ts"])
                seq.append(r["seq"])
                event_id.append(r["event_id"])
                quality.append(r["quality"])
                gateway_id.append(gateway)
                counts.append(len(m))
                quantities.extend(m)
                values.extend(m.values())
            if refused:
                rejected.extend(sorted(refused, key=lambda r: r.record_index) if bad else refused)
        else:
            rejected.append(Rejected(Reason.SCHEMA_MISMATCH, f"expected MeterReading or MeterReadingBatch, "
                                     f"got {rt}", msg))  # fmt: skip
    return _explode(cols, counts, quantities, values), rejected


def _explode(
    cols: dict[str, list[Any]], counts: list[int], quantities: list[str], values: list[float | None]
) -> pl.DataFrame:
    per_reading = pl.DataFrame(cols, schema={name: READINGS_SCHEMA[name] for name in _PER_READING})
    if counts:
        index = pl.int_range(0, len(counts), dtype=pl.UInt32, eager=True)
        per_reading = per_reading[index.repeat_by(pl.Series(counts, dtype=pl.UInt32)).explode()]
    channels = pl.DataFrame(
        {"quantity": quantities, "value": values},
        schema={"quantity": pl.Utf8(), "value": pl.Float64()},
    )
    return pl.concat([per_reading, channels], how="horizontal").select(list(READINGS_SCHEMA))


def decode_sim_usage(messages: Sequence[RawMessage], decoder: Decoder) -> tuple[pl.DataFrame, list[Rejected]]:
    """Decode ``sim.usage`` messages into one row per :data:`SIM_USAGE_SCHEMA` record."""
    cols: dict[str, list[Any]] = {name: [] for name in _SIM_FIELDS}
    rejected: list[Rejected] = []
    for i, msg in enumerate(messages):
        try:
            rt, record = decoder(msg.value)
        except CodecError as exc:
            rejected.append(_rejected(exc, msg))
            continue
        if rt is not RecordType.SIM_USAGE:
            rejected.append(Rejected(Reason.SCHEMA_MISMATCH, f"expected SimUsage, got {rt}", msg))
            continue
        cols["msg_idx"].append(i)
        for name in _SIM_FIELDS[1:]:
            cols[name].append(record[name])
    cols["period_start_ms"] = cols.pop("period_start")
    cols["period_end_ms"] = cols.pop("period_end")
    frame = pl.DataFrame(cols, schema={name: SIM_USAGE_SCHEMA[name] for name in cols})
    return frame.select(list(SIM_USAGE_SCHEMA)), rejected


def decode_registrations(
    messages: Sequence[RawMessage], decoder: Decoder
) -> tuple[list[tuple[str, dict[str, Any] | None, int]], list[Rejected]]:
    """Decode ``registry.devices`` messages into ``(key, record or None for a tombstone, msg_idx)``.

    A message without a key takes the record's ``subject_id``; a tombstone without
    a key, or a key that is not UTF-8, is rejected.
    """
    out: list[tuple[str, dict[str, Any] | None, int]] = []
    rejected: list[Rejected] = []
    for i, msg in enumerate(messages):
        try:
            key = msg.key.decode("utf-8") if msg.key else ""
        except UnicodeDecodeError:
            rejected.append(Rejected(Reason.UNDECODABLE, "key is not UTF-8", msg))
            continue
        if not msg.value:
            if not key:
                rejected.append(Rejected(Reason.EMPTY, "tombstone without a key", msg))
            else:
                out.append((key, None, i))
            continue
        try:
            rt, record = decoder(msg.value)
        except CodecError as exc:
            rejected.append(_rejected(exc, msg))
            continue
        if rt is not RecordType.DEVICE_REGISTRATION:
            rejected.append(Rejected(Reason.SCHEMA_MISMATCH, f"expected DeviceRegistration, got {rt}", msg))
            continue
        out.append((key or record["subject_id"], record, i))
    return out, rejected
