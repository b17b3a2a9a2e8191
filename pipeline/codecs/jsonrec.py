"""JSON objects to records of the same dict shape Avro decoding gives, checked against the Avro schema.

Converters are compiled once from the fastavro-parsed schema. They fill defaults,
ignore unknown keys and raise :class:`CodecError` (``schema_mismatch``) naming the
offending field. Timestamp fields (see :data:`TIMESTAMP_FIELDS`) also accept an
ISO-8601 string with a timezone. With ``lenient=True`` (decoding), a measurement
value that is not a number becomes ``None`` instead of failing the reading.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from pipeline.codecs.store import RecordType
from pipeline.envelope import Reason
from pipeline.errors import CodecError

__all__ = ["TIMESTAMP_FIELDS", "BadItem", "Converter", "compile_record", "infer_record_type", "iso_to_ms"]

Converter = Callable[[Any, str], Any]

TIMESTAMP_FIELDS = frozenset(
    {"ts", "sent_at", "period_start", "period_end", "first_seen", "last_seen", "updated_at", "at"}
)
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_JSON_NAMES = {type(None): "null", bool: "boolean", int: "integer", float: "number", str: "string",
               list: "array", dict: "object"}  # fmt: skip


class BadItem(NamedTuple):
    """One reading of a JSON batch that did not fit the schema (the rest of the batch decodes)."""

    index: int
    detail: str
    item: object  # the reading as parsed from JSON, for the dead-letter payload


def mismatch(path: str, message: str) -> CodecError:
    return CodecError(Reason.SCHEMA_MISMATCH, f"{path}: {message}" if path else message)


def _got(value: object) -> str:
    return "got " + _JSON_NAMES.get(type(value), type(value).__name__)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def iso_to_ms(text: str, path: str = "") -> int:
    """Epoch milliseconds of an ISO-8601 timestamp that carries a timezone (floor to the ms)."""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise mismatch(path, f"not an ISO-8601 timestamp: {text[:40]!r}") from None
    if dt.utcoffset() is None:
        raise mismatch(path, f"ISO-8601 timestamp without timezone: {text[:40]!r}")
    try:
        return (dt - _EPOCH) // _MS
    except OverflowError:
        raise mismatch(path, f"timestamp out of range: {text[:40]!r}") from None


def _string(value: Any, path: str) -> str:
    if type(value) is not str:
        if not isinstance(value, str):
            raise mismatch(path, "expected string, " + _got(value))
        value = str(value)
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise mismatch(path, "string contains an unpaired surrogate") from None
    return value


def _integer(low: int, high: int, kind: str) -> Converter:
    def convert(value: Any, path: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise mismatch(path, f"expected {kind}, " + _got(value))
        if not low <= value <= high:
            raise mismatch(path, f"{kind} out of range: {value}")
        return int(value)

    return convert


_long = _integer(_LONG_MIN, _LONG_MAX, "long")
_int = _integer(_INT_MIN, _INT_MAX, "int")


def _timestamp(value: Any, path: str) -> int:
    if isinstance(value, str):
        ms = iso_to_ms(value, path)
        if not _LONG_MIN <= ms <= _LONG_MAX:
            raise mismatch(path, "timestamp out of range")
        return ms
    if not isinstance(value, int) or isinstance(value, bool):
        raise mismatch(path, "expected epoch ms UTC (integer) or ISO-8601 string with timezone, " + _got(value))
    return _long(value, path)


def _double(value: Any, path: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise mismatch(path, "expected number, " + _got(value))
    try:
        return float(value)
    except OverflowError:
        raise mismatch(path, "number too large for a double") from None


def _lenient_double(value: Any, path: str) -> float | None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def _boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise mismatch(path, "expected boolean, " + _got(value))
    return value


def _null(value: Any, path: str) -> None:
    if value is not None:
        raise mismatch(path, "expected null, " + _got(value))


_PRIMITIVES: dict[str, Converter] = {
    "string": _string, "long": _long, "int": _int, "double": _double, "float": _double,
    "boolean": _boolean, "null": _null,
}  # fmt: skip


def compile_record(parsed: Mapping[str, Any], *, lenient: bool = False) -> Converter:
    """Compile a converter ``(value, path) -> record`` for a fastavro-parsed record schema."""
    return _compile(parsed, parsed.get("__named_schemas", {}), "", lenient)


def _compile(schema: Any, named: Mapping[str, Any], field: str, lenient: bool) -> Converter:
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            if schema == "long" and field in TIMESTAMP_FIELDS:
                return _timestamp
            return _PRIMITIVES[schema]
        return _compile(named[schema], named, field, lenient)
    if isinstance(schema, list):
        return _union(schema, named, field, lenient)
    kind = schema["type"]
    if kind == "record":
        return _record(schema, named, lenient)
    if kind == "map":
        values = _lenient_double if lenient and field == "measurements" else None
        return _map(values or _compile(schema["values"], named, "", lenient))
    if kind == "array":
        return _array(_compile(schema["items"], named, "", lenient))
    if kind == "enum":
        symbols = frozenset(schema["symbols"])

        def enum(value: Any, path: str) -> str:
            if _string(value, path) not in symbols:
                raise mismatch(path, f"not one of {sorted(symbols)}: {value[:40]!r}")
            return value

        return enum
    return _compile(kind, named, field, lenient)  # {"type": "long"} and the like


def _record(schema: Mapping[str, Any], named: Mapping[str, Any], lenient: bool) -> Converter:
    fields = [
        (f["name"], _compile(f["type"], named, f["name"], lenient), "default" in f, f.get("default"))
        for f in schema["fields"]
    ]

    def record(value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise mismatch(path, "expected object, " + _got(value))
        out: dict[str, Any] = {}
        for name, convert, has_default, default in fields:
            if name in value:
                out[name] = convert(value[name], _join(path, name))
            elif has_default:
                out[name] = dict(default) if isinstance(default, dict) else default
            else:
                raise mismatch(_join(path, name), "missing required field")
        return out

    return record


def _union(branches: list[Any], named: Mapping[str, Any], field: str, lenient: bool) -> Converter:
    nullable = "null" in branches
    converters = [_compile(b, named, field, lenient) for b in branches if b != "null"]

    def union(value: Any, path: str) -> Any:
        if value is None:
            if nullable:
                return None
            raise mismatch(path, "must not be null")
        if len(converters) == 1:
            return converters[0](value, path)
        for convert in converters:
            try:
                return convert(value, path)
            except CodecError:
                continue
        raise mismatch(path, "matches no branch of the union, " + _got(value))

    return union


def _map(values: Converter) -> Converter:
    def convert(value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise mismatch(path, "expected object, " + _got(value))
        return {_string(k, path): values(v, _join(path, k)) for k, v in value.items()}

    return convert


def _array(items: Converter) -> Converter:
    def convert(value: Any, path: str) -> list[Any]:
        if not isinstance(value, list | tuple):
            raise mismatch(path, "expected array, " + _got(value))
        return [items(v, f"{path}[{i}]") for i, v in enumerate(value)]

    return convert


def infer_record_type(obj: Mapping[str, Any]) -> RecordType:
    """Which record a JSON object is, from the fields it has."""
    if "readings" in obj:
        return RecordType.METER_READING_BATCH
    if "measurements" in obj:
        return RecordType.METER_READING
    if "iccid" in obj and "period_start" in obj:
        return RecordType.SIM_USAGE
    if "alert_id" in obj:  # before subject_id: alerts carry a subject_id too
        return RecordType.ALERT
    if "subject_id" in obj:
        return RecordType.DEVICE_REGISTRATION
    raise mismatch("", "JSON object is no known record (none of readings, measurements, "
                   "iccid+period_start, alert_id, subject_id)")  # fmt: skip
