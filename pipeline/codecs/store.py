"""Record types, wire formats and the schema store (``schemas/*.avsc`` parsed once).

The store knows each record type's fastavro-parsed schema, its Parsing Canonical
Form and its CRC-64-AVRO fingerprint (the 8 bytes after ``C3 01`` in Avro
single-object encoding), plus the Confluent schema ids it has been told about or
has looked up in a schema registry.
"""

from __future__ import annotations

import json
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from fastavro import parse_schema
from fastavro.schema import to_parsing_canonical_form

from pipeline.errors import ConfigError
from pipeline.resources import schemas_dir

__all__ = ["RecordType", "SchemaRegistry", "SchemaStore", "WireFormat", "rabin_fingerprint"]

NAMESPACE = "telemetry"
_EMPTY_64 = 0xC15D213AA4D7A795  # the CRC-64-AVRO polynomial from the Avro specification


class WireFormat(StrEnum):
    AVRO = "avro"  # single-object encoding: C3 01 + 8-byte LE CRC-64-AVRO fingerprint + Avro binary
    CONFLUENT = "confluent"  # 0x00 + 4-byte big-endian schema id + Avro binary
    JSON = "json"  # a UTF-8 JSON object with the same field names


class RecordType(StrEnum):
    METER_READING = "MeterReading"
    METER_READING_BATCH = "MeterReadingBatch"
    SIM_USAGE = "SimUsage"
    DEVICE_REGISTRATION = "DeviceRegistration"
    ALERT = "Alert"


class RegisteredSchema(Protocol):
    @property
    def schema_str(self) -> str | None: ...
    @property
    def schema_type(self) -> str | None: ...
    @property
    def references(self) -> list[Any] | None: ...


class SchemaRegistry(Protocol):
    """What the store needs of ``confluent_kafka.schema_registry.SchemaRegistryClient``.

    ``get_schema`` raises an error with ``http_status_code == 404`` for an unknown id.
    """

    def get_schema(self, schema_id: int) -> RegisteredSchema: ...


_TYPE_NAMES = frozenset(rt.value for rt in RecordType)


@cache
def _rabin_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY_64 & -(fp & 1))
        table.append(fp)
    return tuple(table)


def rabin_fingerprint(data: bytes) -> bytes:
    """CRC-64-AVRO (Rabin) fingerprint of ``data``, 8 bytes little-endian as in single-object encoding."""
    table = _rabin_table()
    fp = _EMPTY_64
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp.to_bytes(8, "little")


def _record_type_of(schema: object) -> RecordType | None:
    """The record type a top-level schema defines (``telemetry.<RecordType>``), if any."""
    if not isinstance(schema, dict):
        return None
    name = str(schema.get("name", ""))
    fullname = name if "." in name else f"{schema.get('namespace', '')}.{name}"
    namespace, _, short = fullname.rpartition(".")
    if namespace != NAMESPACE or short not in _TYPE_NAMES:
        return None
    return RecordType(short)


class SchemaStore:
    """Parsed schemas of every record type, looked up by type, fingerprint or Confluent id."""

    def __init__(
        self,
        raw: dict[RecordType, dict[str, Any]],
        *,
        registry: SchemaRegistry | None = None,
    ) -> None:
        self._raw = raw
        self._parsed: dict[RecordType, dict[str, Any]] = {}
        self._canonical: dict[RecordType, str] = {}
        self._fingerprint: dict[RecordType, bytes] = {}
        for rt, schema in raw.items():
            # a fresh name table per file: every file is self-contained
            self._parsed[rt] = parse_schema(schema, named_schemas={})
            self._canonical[rt] = to_parsing_canonical_form(schema)
            self._fingerprint[rt] = rabin_fingerprint(self._canonical[rt].encode("utf-8"))
        self._by_fingerprint = {fp: rt for rt, fp in self._fingerprint.items()}
        self._local_ids: dict[int, RecordType] = {}
        self._remote_ids: dict[int, RecordType | None] = {}
        self._registry = registry

    @classmethod
    def load(cls, directory: Path | None = None, *, registry: SchemaRegistry | None = None) -> SchemaStore:
        """Parse every ``*.avsc`` in ``directory`` (default: the repository's ``schemas/``).

        Raises :class:`ConfigError` if a file is unreadable, is not a valid Avro
        schema, or if one of the :class:`RecordType` schemas is missing.
        """
        directory = directory or schemas_dir()
        raw: dict[RecordType, dict[str, Any]] = {}
        for path in sorted(directory.glob("*.avsc")):
            try:
                schema = json.loads(path.read_text(encoding="utf-8"))
                parse_schema(schema, named_schemas={})
            except Exception as exc:  # fastavro raises several types for bad schemas
                raise ConfigError(f"invalid Avro schema {path}: {exc}") from exc
            rt = _record_type_of(schema)
            if rt is not None:
                raw[rt] = schema
        missing = sorted(set(RecordType) - set(raw))
        if missing:
            raise ConfigError(f"schemas missing from {directory}: {', '.join(missing)}")
        return cls(raw, registry=registry)

    def parsed(self, rt: RecordType) -> dict[str, Any]:
        """The fastavro-parsed schema (pass it to ``schemaless_reader``/``schemaless_writer``)."""
        return self._parsed[rt]

    def canonical(self, rt: RecordType) -> str:
        """The Parsing Canonical Form (what the fingerprint is computed over)."""
        return self._canonical[rt]

    def schema_str(self, rt: RecordType) -> str:
        """The full schema as JSON text, e.g. to register it with a schema registry."""
        return json.dumps(self._raw[rt])

    def fingerprint(self, rt: RecordType) -> bytes:
        """8-byte CRC-64-AVRO fingerprint of the canonical form, little-endian."""
        return self._fingerprint[rt]

    def by_fingerprint(self, fp: bytes) -> RecordType | None:
        return self._by_fingerprint.get(bytes(fp))

    def register_id(self, schema_id: int, rt: RecordType) -> None:
        """Declare a Confluent schema id locally (no registry server needed)."""
        self._local_ids[schema_id] = RecordType(rt)

    def id_of(self, rt: RecordType) -> int | None:
        """A Confluent schema id known for ``rt`` (local first, then registry lookups), if any."""
        for ids in (self._local_ids, self._remote_ids):
            for schema_id, known in ids.items():
                if known is rt:
                    return schema_id
        return None

    def by_id(self, schema_id: int) -> RecordType | None:
        """Record type of a Confluent schema id: local ids, then the registry (cached).

        A registry schema matches a record type when its canonical form has the
        same fingerprint. Ids the registry does not know, or that match no local
        schema, are cached as unknown. Registry errors propagate (not cached).
        """
        rt = self._local_ids.get(schema_id)
        if rt is not None or self._registry is None:
            return rt
        if schema_id in self._remote_ids:
            return self._remote_ids[schema_id]
        try:
            registered = self._registry.get_schema(schema_id)
        except Exception as exc:  # confluent_kafka's SchemaRegistryError; 404 = no such id
            if getattr(exc, "http_status_code", None) != 404:
                raise
            self._remote_ids[schema_id] = None
            return None
        found: RecordType | None = None
        if (registered.schema_type or "AVRO") == "AVRO" and not registered.references:
            try:
                canonical = to_parsing_canonical_form(json.loads(registered.schema_str or ""))
                found = self.by_fingerprint(rabin_fingerprint(canonical.encode("utf-8")))
            except Exception:  # an unparsable registry schema matches nothing
                found = None
        self._remote_ids[schema_id] = found
        return found
