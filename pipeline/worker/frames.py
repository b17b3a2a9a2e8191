"""meter.frames: encrypted DLMS/COSEM push frames into the same path as every other meter reading.

Per batch: :class:`~pipeline.dlms.FrameDecoder` reassembles, decrypts and decodes
the frames; each decoded reading must belong to a registered meter (its device id
is the meter number 0-0:96.1.0, else the system title in hex); the readings become
the long-format frame of :func:`~pipeline.codecs.decode_readings` plus the DLMS
clock flags, and run through :func:`~pipeline.worker.processors.readings_tail`
(validate → duplicates → tag tenant → readings_store) like ``meter.readings``.

Registry and key store: the key store (``DLMS_KEYS_FILE``) holds the secrets, by
system title or meter number; the registry holds no key material. A registration's
``key_id``, when set, names the key entry that may speak for the meter: the system
title in hex (or the meter number, for a key entry known by meter number only). A
frame that decrypted under another system title is refused as ``unknown_device``
(the registration does not cover it), so a key holder cannot push readings under
another tenant's meter number.

Replay protection: the last accepted frame counter per system title lives in a
Faust table (:class:`ReplayCounters`). A counter moves only when its frame decrypted,
parsed *and* belongs to a registered meter, and reaches the table only after the
batch's rows are durable (:class:`FramesRunner`); a frame refused as ``unknown_key``,
``decrypt_failed``, ``auth_failed`` or ``unknown_device`` leaves it where it was, so
the frame can be re-processed after the key or the registration is added -- as long
as no newer frame of that meter has been accepted in between (docs/dlms.md).

Dead letters: a frame refused after decoding carries the frames each source message
contributed (a split APDU gives one dead letter per message), never a re-encoding,
so replaying it to ``meter.frames`` re-processes exactly those bytes. Key material
never reaches a detail, a header or a log line.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.catalogue import Catalogue
from pipeline.codecs.frames import READINGS_SCHEMA
from pipeline.dlms import DecodedReading, FrameDecoder, KeyStore
from pipeline.envelope import RawMessage, Reason, Rejected
from pipeline.tenancy import Registration, Registry
from pipeline.validation import DuplicateFilter, ReadingValidator
from pipeline.worker.processors import BatchResult, Derive, readings_frame, readings_tail
from pipeline.worker.runner import BatchRunner

log = logging.getLogger(__name__)

__all__ = [
    "FramesProcessor",
    "FramesRunner",
    "ReplayCounters",
    "install_expiry_timer",
    "load_keys",
    "replay_counters_table",
]

_FRAME_SCHEMA = {**READINGS_SCHEMA, "flags": pl.UInt32()}
_MAX_DETAILS = 5


def load_keys(path: Path | None) -> KeyStore:
    """The key store named in the settings (empty without one: every frame is then ``unknown_key``)."""
    if path is None:
        log.warning("DLMS_KEYS_FILE is not set: encrypted frames will be dead-lettered as unknown_key")
        return KeyStore()
    keys = KeyStore.from_file(path)  # ConfigError names the file and the entry, never a key
    log.info("DLMS key store: %d entries from %s", len(keys), path)
    return keys


class ReplayCounters:
    """Last accepted frame counter per system title (upper-case hex), persisted through ``write``.

    ``store`` maps a system title to the counter as decimal ASCII bytes: in the worker
    a read view of the ``dlms_replay`` Faust table, whose changelog makes it survive
    restarts; ``write(title, value, partition)`` puts a value into the table and its
    changelog. Without them the counters live in a dict (tests, benchmarks). Counters
    this process wrote are also kept locally, so a late changelog echo never moves one back.
    """

    def __init__(
        self,
        store: Mapping[str, bytes] | None = None,
        write: Callable[[str, bytes, int], None] | None = None,
    ) -> None:
        if store is None:
            own: dict[str, bytes] = {}
            store = own
            write = write or (lambda title, value, _partition: own.__setitem__(title, value))
        self._store = store
        self._write = write
        self._local: dict[str, int] = {}

    def get(self, title: str) -> int | None:
        raw = self._store.get(title)
        stored = int(raw) if raw else None
        mine = self._local.get(title)
        if stored is None or mine is None:
            return mine if stored is None else stored
        return max(stored, mine)

    def put(self, title: str, counter: int, partition: int) -> None:
        """Record an accepted counter (never moves backwards); ``partition`` = its source partition."""
        last = self.get(title)
        if last is not None and counter <= last:
            return
        self._local[title] = counter
        if self._write is not None:
            self._write(title, str(counter).encode(), partition)

    def __len__(self) -> int:
        return len(self._store)


class _Staged(MutableMapping[str, int]):
    """The replay state the decoder sees, in three layers.

    ``pending``: frames of the current batch that decoded (the decoder's guard writes here
    as soon as a frame decoded); the processor keeps those of registered meters and drops
    the rest. ``accepted``: kept, but their rows may not be durable yet; they reach the
    table only through :meth:`FramesProcessor.persist_counters`, after the batch was
    flushed, so a crash in between lets the redelivered frames pass again instead of
    losing their rows. Then the persisted counters.
    """

    def __init__(self, counters: ReplayCounters) -> None:
        self.counters = counters
        self.pending: dict[str, int] = {}
        self.accepted: dict[str, tuple[int, int]] = {}  # title -> (counter, source partition)

    def __getitem__(self, title: str) -> int:
        value = self.pending.get(title)
        if value is None and title in self.accepted:
            value = self.accepted[title][0]
        if value is None:
            value = self.counters.get(title)
        if value is None:
            raise KeyError(title)
        return value

    def __setitem__(self, title: str, counter: int) -> None:
        self.pending[title] = counter

    def __delitem__(self, title: str) -> None:
        del self.pending[title]

    def __iter__(self) -> Iterator[str]:
        return iter(self.pending)

    def __len__(self) -> int:
        return len(self.pending)


def _key_id_fits(reg: Registration, reading: DecodedReading) -> bool:
    key_id = reg.key_id.strip().upper()
    return not key_id or key_id in (reading.system_title, reading.device_id.upper())


def _rejects(
    reading: DecodedReading, reason: Reason, detail: str, record_index: int, tenant: str = ""
) -> list[Rejected]:
    """One dead letter per message the reading's frames came from, carrying those frames."""
    extra = (("system_title", reading.system_title), ("frame_counter", str(reading.frame_counter)))
    return [
        Rejected(
            reason,
            detail,
            msg,
            record_index=record_index,
            payload=None if raw == msg.value else raw,
            tenant_id=tenant,
            extra=extra,
        )
        for msg, raw in reading.sources
    ]


class FramesProcessor:
    """meter.frames: frames → decrypt/decode → registered meter → validate → duplicates → tag → rows."""

    def __init__(
        self,
        keys: KeyStore,
        catalogue: Catalogue,
        validator: ReadingValidator,
        registry: Registry,
        duplicates: DuplicateFilter,
        counters: ReplayCounters | None = None,
        *,
        max_wait_ms: int = 30_000,
        derive: Derive | None = None,
    ) -> None:
        self.counters = counters if counters is not None else ReplayCounters()
        self._state = _Staged(self.counters)
        self._decoder = FrameDecoder(keys, catalogue, self._state, max_wait_ms=max_wait_ms)
        self._validate = validator
        self._registry = registry
        self._duplicates = duplicates
        self._derive = derive  # the same derive stage as meter.readings (interval consumption)
        self._lock = threading.Lock()  # the decoder's reassembly state is shared with the expiry timer

    @property
    def pending(self) -> int:
        """Message keys with a partial APDU waiting for its other segments."""
        return self._decoder.pending

    def persist_counters(self) -> int:
        """Write the counters of accepted frames to the table; call once their batch is durable."""
        with self._lock:
            accepted, self._state.accepted = self._state.accepted, {}
            for title, (counter, partition) in accepted.items():
                self.counters.put(title, counter, partition)
            return len(accepted)

    def expire(self, now_ms: int) -> list[Rejected]:
        """Partial APDUs that waited ``max_wait_ms``: ``incomplete_frame`` dead letters."""
        with self._lock:
            return self._decoder.expire(now_ms)

    def __call__(self, messages: Sequence[RawMessage], now_ms: int) -> BatchResult:
        with self._lock:
            try:
                return self._process(messages, now_ms)
            finally:
                self._state.pending.clear()

    def _process(self, messages: Sequence[RawMessage], now_ms: int) -> BatchResult:
        readings, rejects = self._decoder.decode(messages, now_ms)
        per_message: dict[int, int] = {}
        for r in readings:
            per_message[r.msg_idx] = per_message.get(r.msg_idx, 0) + 1
        seen: dict[int, int] = {}
        record_index: list[int] = []
        for r in readings:  # -1 when the reading is its message's only one, else its position there
            n = seen.get(r.msg_idx, 0)
            seen[r.msg_idx] = n + 1
            record_index.append(-1 if per_message[r.msg_idx] == 1 else n)

        kept: list[int] = []  # indexes into ``readings`` of readings of registered meters
        tenants: dict[int, str] = {}
        for i, r in enumerate(readings):
            reg = self._registry.get(r.device_id)
            if reg is None or reg.subject_type != "device":
                rejects += _rejects(r, Reason.UNKNOWN_DEVICE, f"device {r.device_id} is not registered",
                                    record_index[i])  # fmt: skip
            elif not _key_id_fits(reg, r):
                detail = (f"meter {r.device_id} is registered with key_id {reg.key_id}, "
                          f"the frame came with system title {r.system_title}")  # fmt: skip
                rejects += _rejects(r, Reason.UNKNOWN_DEVICE, detail, record_index[i], reg.tenant_id)
            else:
                kept.append(i)
                tenants[i] = reg.tenant_id

        frame = _to_frame(readings, kept)
        table, bad, n_dups = readings_tail(frame, messages, now_ms, self._validate, self._duplicates, self._registry)
        if bad.height:
            for (rec_idx, reason), group in bad.group_by(["rec_idx", "reason"], maintain_order=True):
                details = list(dict.fromkeys(group.get_column("detail").to_list()))  # unique, in order
                detail = "; ".join(details[:_MAX_DETAILS]) + (
                    f" (+{len(details) - _MAX_DETAILS} more)" if len(details) > _MAX_DETAILS else ""
                )
                rejects += _rejects(readings[rec_idx], Reason(reason), detail, record_index[rec_idx], tenants[rec_idx])

        for i in kept:  # accepted: the counter moves now, and reaches the table once the rows are durable
            r = readings[i]
            last = self._state.accepted.get(r.system_title)
            if last is None or r.frame_counter > last[0]:
                self._state.accepted[r.system_title] = (r.frame_counter, messages[r.msg_idx].partition)
        rejects += self._decoder.expire(now_ms)
        tables = {"readings_store": table} if table.num_rows else {}
        if self._derive is not None and table.num_rows:
            tables |= self._derive(readings_frame(table), now_ms)
        return BatchResult(tables, rejects, table.num_rows, n_dups)


def _to_frame(readings: Sequence[DecodedReading], kept: Sequence[int]) -> pl.DataFrame:
    """Long format, one row per reading and catalogue quantity; ``rec_idx`` = index in ``readings``."""
    cols: dict[str, list[Any]] = {name: [] for name in _FRAME_SCHEMA}
    for i in kept:
        r = readings[i]
        n = len(r.measurements)
        cols["msg_idx"] += [r.msg_idx] * n
        cols["rec_idx"] += [i] * n
        cols["device_id"] += [r.device_id] * n
        cols["ts_ms"] += [r.ts_ms] * n
        cols["quantity"] += list(r.measurements)
        cols["value"] += list(r.measurements.values())
        cols["seq"] += [r.frame_counter] * n
        cols["event_id"] += [None] * n
        cols["quality"] += [None] * n
        cols["gateway_id"] += [None] * n
        cols["flags"] += [r.flags] * n
    return pl.DataFrame(cols, schema=_FRAME_SCHEMA)


# -- Faust wiring (kept here so that app.py only names it) ------------------------------------------------------


def replay_counters_table(app: Any, partitions: int) -> ReplayCounters:
    """The ``dlms_replay`` global table (default changelog topic) as :class:`ReplayCounters`.

    Keys are system titles, values the counter as decimal ASCII, both raw bytes, written
    like the registry: ``table.data`` plus ``send_changelog`` to the partition of the
    frame's source message. Every worker recovers the whole table before it processes.
    """
    from pipeline.worker.app import TableStore

    # bytes key/value types: Faust derives the changelog codec from them (raw), not from a schema
    table = app.GlobalTable("dlms_replay", partitions=partitions, key_type=bytes, value_type=bytes)

    def write(title: str, value: bytes, partition: int) -> None:
        key = title.encode()
        table.data[key] = value
        table.send_changelog(partition, key, value, key_serializer="raw", value_serializer="raw")

    return ReplayCounters(TableStore(table), write)


class FramesRunner(BatchRunner):
    """The meter.frames runner: after a batch is durable, its frame counters go to the table."""

    def __init__(self, name: str, processor: FramesProcessor, *args: Any, **kwargs: Any) -> None:
        super().__init__(name, processor, *args, **kwargs)
        self.frames = processor

    async def run(self, messages: Sequence[RawMessage]) -> None:
        await super().run(messages)  # returns once rows and dead letters are durable
        self.frames.persist_counters()  # Faust flushes the changelog before it commits the offsets


def install_expiry_timer(app: Any, processor: FramesProcessor, deadletters: Any, sink: Any, max_wait_ms: int) -> None:
    """A Faust timer that dead-letters partial APDUs whose segments never came (``incomplete_frame``).

    Batches expire them too, but only when frames keep arriving.
    """

    @app.timer(max(1.0, max_wait_ms / 4000))
    async def expire_partial_frames() -> None:
        rejects = processor.expire(int(time.time() * 1000))
        if rejects:
            deadletters.add(rejects)
            await deadletters.flush()
            await sink.flush()
