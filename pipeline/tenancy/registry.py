"""The device registry: who owns which device or SIM.

The registry topic (compacted, keyed by device id or ICCID) is materialised by
the worker into a Faust table of raw registration bytes. :class:`Registry`
reads through that mapping and keeps parsed :class:`Registration` objects in a
cache, so that lookups on the hot path are dict hits.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

CHANGE_LOG_LIMIT = 100_000  # registry changes kept for changed_since (2x at most before trimming)


@dataclass(frozen=True, slots=True)
class Registration:
    subject_id: str
    subject_type: str
    kind: str
    tenant_id: str
    site_id: str
    branch: str = ""
    timezone: str = "UTC"
    gateway_id: str = ""
    sim_iccid: str = ""
    key_id: str = ""
    rated_power_w: float | None = None
    expected_period_s: int | None = None
    tank_capacity_l: float | None = None
    register_ceilings: dict[str, float] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # non-null fields only


_SHORT = 48  # strings up to this long are interned: tenant, site, kind, timezone repeat across devices


def compact(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` without its null fields, its short strings interned.

    Every registration of a fleet is kept parsed (100,000 of them in the bench's memory run),
    and a decoded Avro record carries all ~28 schema fields, most of them null: dropping
    those and sharing the repeated strings takes a parsed registration from about 2.1 to
    1.3 KB. ``record.get(name)`` reads the same.
    """
    return {k: sys.intern(v) if isinstance(v, str) and len(v) <= _SHORT else v
            for k, v in record.items() if v is not None}  # fmt: skip


def parse_registration(record: dict[str, Any]) -> Registration:
    """Build a Registration from a decoded DeviceRegistration record (Avro or JSON dict); its
    ``record`` is the :func:`compact` copy."""
    record = compact(record)
    return Registration(
        subject_id=str(record["subject_id"]),
        subject_type=str(record.get("subject_type") or "device"),
        kind=str(record.get("kind") or ""),
        tenant_id=str(record["tenant_id"]),
        site_id=str(record.get("site_id") or ""),
        branch=str(record.get("branch") or ""),
        timezone=str(record.get("timezone") or "UTC"),
        gateway_id=str(record.get("gateway_id") or ""),
        sim_iccid=str(record.get("sim_iccid") or ""),
        key_id=str(record.get("key_id") or ""),
        rated_power_w=record.get("rated_power_w"),
        expected_period_s=record.get("expected_period_s"),
        tank_capacity_l=record.get("tank_capacity_l"),
        register_ceilings=dict(record.get("register_ceilings") or {}),
        record=record,
    )


class Registry:
    """Lookups of registrations by subject id, read through a mapping of subject id → raw bytes.

    ``store`` is the Faust global table of the registry topic in the worker (read
    only: the topic is its changelog) and a plain dict in tests. ``decode`` turns
    the stored bytes (Avro or JSON) into a record dict. Parsed registrations are
    cached; :meth:`apply` keeps the cache in step with table updates.
    """

    def __init__(
        self,
        store: Mapping[str, bytes] | None = None,
        *,
        decode: Callable[[bytes], dict[str, Any]] = json.loads,
        write: Callable[[str, bytes | None, int], None] | None = None,
    ) -> None:
        self._store: Mapping[str, bytes] = store if store is not None else {}
        self._decode = decode
        self._write = write
        self._cache: dict[str, Registration | None] = {}
        # (version of the first entry, the latest subjects put, deleted or updated, oldest first): one
        # attribute, replaced whole when trimmed, so a reader in another thread sees a consistent pair
        self._log: tuple[int, list[str]] = (0, [])

    @property
    def version(self) -> int:
        """The number of changes so far (put, delete, applied update): a cursor for :meth:`changed_since`."""
        base, changes = self._log
        return base + len(changes)

    def changed_since(self, version: int) -> list[str] | None:
        """Subjects changed after :attr:`version` was ``version`` (for caches of facts derived from them).

        The log keeps the latest :data:`CHANGE_LOG_LIMIT` changes or more; ``None`` means the cursor is
        older than that and a cache must treat every subject as changed.
        """
        base, changes = self._log
        if version < base:
            return None
        return changes[version - base :]

    def _changed(self, subject_id: str) -> None:
        base, changes = self._log
        changes.append(subject_id)
        if len(changes) > 2 * CHANGE_LOG_LIMIT:
            drop = len(changes) - CHANGE_LOG_LIMIT
            self._log = (base + drop, changes[drop:])

    def __len__(self) -> int:
        return len(self._store)

    def put(self, record: dict[str, Any], raw: bytes | None = None, partition: int = 0) -> Registration:
        """Store a registration (``raw`` = its bytes as received) and cache it parsed."""
        reg = parse_registration(record)
        if self._write is not None:
            self._write(reg.subject_id, raw if raw is not None else json.dumps(record).encode(), partition)
        self._cache[reg.subject_id] = reg
        self._changed(reg.subject_id)
        return reg

    def delete(self, subject_id: str, partition: int = 0) -> Registration | None:
        """Forget a subject (tombstone); return what it was registered as."""
        previous = self.get(subject_id)
        if self._write is not None:
            self._write(subject_id, None, partition)
        self._cache[subject_id] = None
        self._changed(subject_id)
        return previous

    def apply(self, subject_id: str, raw: bytes | None) -> None:
        """A table update arrived (recovery or another worker): refresh the cache entry."""
        self._changed(subject_id)
        if raw is None:
            self._cache[subject_id] = None
            return
        try:
            self._cache[subject_id] = parse_registration(self._decode(raw))
        except Exception:  # undecodable registration: the registry agent dead-letters it
            self._cache.pop(subject_id, None)

    def get(self, subject_id: str) -> Registration | None:
        try:
            return self._cache[subject_id]
        except KeyError:
            pass
        raw = self._store.get(subject_id)
        if not raw:  # misses are not cached: the table may catch up later
            return None
        try:
            reg = parse_registration(self._decode(raw))
        except Exception:
            return None
        self._cache[subject_id] = reg
        return reg

    def lookup_many(self, subject_ids: Iterable[str]) -> dict[str, Registration]:
        out: dict[str, Registration] = {}
        for sid in subject_ids:
            reg = self.get(sid)
            if reg is not None:
                out[sid] = reg
        return out
