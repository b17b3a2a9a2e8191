"""Encoder and Decoder: records to bytes in any wire format, and bytes back by detecting the format.

Detection by the first bytes of the value:

* ``C3 01`` + 8-byte fingerprint: Avro single-object encoding (unknown fingerprint: ``unknown_schema``)
* ``00`` + 4-byte big-endian id: Confluent framing (unknown id: ``unknown_schema``)
* first non-whitespace byte ``{``: a JSON object, record type inferred from its fields
* anything else: ``undecodable``

Both classes raise :class:`CodecError` and nothing else.
"""

from __future__ import annotations

import json
from io import BytesIO
from typing import Any, NamedTuple

from fastavro import schemaless_reader, schemaless_writer

from pipeline.codecs.jsonrec import BadItem, compile_record, infer_record_type, mismatch
from pipeline.codecs.store import RecordType, SchemaStore, WireFormat
from pipeline.envelope import Reason
from pipeline.errors import CodecError

__all__ = ["Decoded", "Decoder", "Encoder"]

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = 0
_SINGLE_HEADER = 10  # C3 01 + 8-byte fingerprint
_CONFLUENT_HEADER = 5  # 00 + 4-byte schema id
_WHITESPACE = b" \t\r\n"


class Decoded(NamedTuple):
    """A decoded value. ``bad`` lists readings of a JSON batch that did not fit the schema;
    their places in ``record["readings"]`` hold ``None``. Always empty for other values."""

    record_type: RecordType
    record: dict[str, Any]
    bad: tuple[BadItem, ...] = ()


class Encoder:
    """Encode a record dict as Avro single-object, Confluent-framed Avro or JSON bytes.

    The record is checked against the schema first (defaults filled, unknown keys
    dropped, timestamps may be ISO-8601 strings); a record that does not fit raises
    ``CodecError(schema_mismatch)``.
    """

    def __init__(self, store: SchemaStore) -> None:
        self._store = store
        self._convert = {rt: compile_record(store.parsed(rt)) for rt in RecordType}

    def __call__(
        self,
        rt: RecordType,
        record: dict[str, Any],
        fmt: WireFormat = WireFormat.AVRO,
        *,
        schema_id: int | None = None,
    ) -> bytes:
        try:
            rt, fmt = RecordType(rt), WireFormat(fmt)
        except ValueError as exc:
            raise CodecError(Reason.UNKNOWN_SCHEMA, str(exc)) from None
        normalized = self._convert[rt](record, "")
        try:
            if fmt is WireFormat.JSON:
                return json.dumps(normalized, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            out = BytesIO()
            if fmt is WireFormat.AVRO:
                out.write(SINGLE_OBJECT_MAGIC + self._store.fingerprint(rt))
            else:
                schema_id = self._store.id_of(rt) if schema_id is None else schema_id
                if schema_id is None or not 0 <= schema_id < 2**32:
                    raise CodecError(Reason.UNKNOWN_SCHEMA, f"no Confluent schema id for {rt}: {schema_id}")
                out.write(b"\x00" + schema_id.to_bytes(4, "big"))
            schemaless_writer(out, self._store.parsed(rt), normalized)
            return out.getvalue()
        except CodecError:
            raise
        except Exception as exc:
            raise mismatch("", f"cannot encode {rt}: {type(exc).__name__}: {exc}") from exc


class Decoder:
    """Decode one Kafka value of any wire format into ``(record type, record dict)``."""

    def __init__(self, store: SchemaStore, *, max_bytes: int = 1_048_576) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self._json = {rt: compile_record(store.parsed(rt), lenient=True) for rt in RecordType}

    def __call__(self, value: bytes | None) -> tuple[RecordType, dict[str, Any]]:
        decoded = self.decode_partial(value)
        if decoded.bad:
            more = f" (and {len(decoded.bad) - 1} more bad readings)" if len(decoded.bad) > 1 else ""
            raise CodecError(Reason.SCHEMA_MISMATCH, decoded.bad[0].detail + more)
        return decoded.record_type, decoded.record

    def decode_partial(self, value: bytes | None) -> Decoded:
        """Like calling the decoder, but a JSON batch with bad readings still decodes (see :class:`Decoded`)."""
        try:
            return self._decode(value)
        except CodecError:
            raise
        except Exception as exc:  # the promise: nothing but CodecError leaves the decoder
            raise CodecError(Reason.UNDECODABLE, f"{type(exc).__name__}: {exc}") from exc

    def _decode(self, value: bytes | None) -> Decoded:
        if value is None:
            raise CodecError(Reason.EMPTY, "value is null")
        size = len(value)
        if size > self.max_bytes:
            raise CodecError(Reason.OVERSIZE, f"{size} bytes > limit {self.max_bytes}")
        if size == 0:
            raise CodecError(Reason.EMPTY, "value is empty")
        first = value[0]
        if first == 0xC3 and value[1:2] == b"\x01":
            if size < _SINGLE_HEADER:
                raise CodecError(Reason.UNDECODABLE, f"single-object header truncated ({size} bytes)")
            rt = self.store.by_fingerprint(value[2:_SINGLE_HEADER])
            if rt is None:
                raise CodecError(Reason.UNKNOWN_SCHEMA, f"unknown schema fingerprint {value[2:10].hex()}")
            return Decoded(rt, self._avro(value, rt, _SINGLE_HEADER))
        if first == CONFLUENT_MAGIC:
            if size < _CONFLUENT_HEADER:
                raise CodecError(Reason.UNDECODABLE, f"Confluent header truncated ({size} bytes)")
            schema_id = int.from_bytes(value[1:_CONFLUENT_HEADER], "big")
            try:
                found = self.store.by_id(schema_id)
            except Exception as exc:
                raise CodecError(Reason.UNKNOWN_SCHEMA, f"schema registry lookup of id {schema_id} "
                                 f"failed: {type(exc).__name__}: {exc}") from exc  # fmt: skip
            if found is None:
                raise CodecError(Reason.UNKNOWN_SCHEMA, f"unknown Confluent schema id {schema_id}")
            return Decoded(found, self._avro(value, found, _CONFLUENT_HEADER))
        if first == 0x7B or (first in _WHITESPACE and value.lstrip(_WHITESPACE)[:1] == b"{"):
            return self._from_json(value)
        raise CodecError(Reason.UNDECODABLE, f"not Avro, Confluent or JSON (starts with {bytes(value[:4]).hex()})")

    def _avro(self, value: bytes, rt: RecordType, start: int) -> dict[str, Any]:
        stream = BytesIO(value)
        stream.seek(start)
        try:
            record = schemaless_reader(stream, self.store.parsed(rt), None)
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}" if str(exc) else "unexpected end of data"
            raise CodecError(Reason.UNDECODABLE, f"corrupt Avro {rt}: {why}") from exc
        end = stream.tell()
        if end != len(value):
            raise CodecError(Reason.UNDECODABLE, f"corrupt Avro {rt}: {len(value) - end} bytes after the record")
        if not isinstance(record, dict):
            raise CodecError(Reason.UNDECODABLE, f"corrupt Avro {rt}: not a record")
        return record

    def _from_json(self, value: bytes) -> Decoded:
        try:
            obj = json.loads(value)
        except (ValueError, RecursionError) as exc:
            raise CodecError(Reason.UNDECODABLE, f"invalid JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise CodecError(Reason.UNDECODABLE, "JSON value is not an object")
        rt = infer_record_type(obj)
        if rt is not RecordType.METER_READING_BATCH:
            return Decoded(rt, self._json[rt](obj, ""))
        readings = obj.get("readings")
        if not isinstance(readings, list):
            raise mismatch("readings", "expected array")
        record = self._json[rt]({**obj, "readings": []}, "")
        convert = self._json[RecordType.METER_READING]
        good: list[dict[str, Any] | None] = []
        bad: list[BadItem] = []
        for i, item in enumerate(readings):
            try:
                good.append(convert(item, f"readings[{i}]"))
            except CodecError as exc:
                good.append(None)
                bad.append(BadItem(i, exc.detail, item))
        record["readings"] = good
        return Decoded(rt, record, tuple(bad))
