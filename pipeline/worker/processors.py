"""The hot path as pure batch functions: raw Kafka messages in, Arrow rows and rejections out.

Each processor takes the messages of one consumed batch and returns a
:class:`BatchResult`; the Faust agents only move messages in and results out,
so the same code runs in the worker, the benchmark and the in-memory tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa

from pipeline.codecs import Decoder, decode_readings, decode_registrations, decode_sim_usage
from pipeline.envelope import RawMessage, Reason, Rejected
from pipeline.tenancy import Pseudonymizer, Registry, tag_frame
from pipeline.validation import DuplicateFilter, ReadingValidator, SimUsageValidator
from pipeline.worker import schemas as S
from pipeline.worker.rejects import rows_to_rejects


@dataclass
class BatchResult:
    tables: dict[str, pa.Table] = field(default_factory=dict)
    rejects: list[Rejected] = field(default_factory=list)
    accepted: int = 0
    duplicates: int = 0


def _source_columns(frame: pl.DataFrame, messages: Sequence[RawMessage]) -> pl.DataFrame:
    """Add src_topic / src_partition / src_offset looked up by msg_idx."""
    idx = frame.get_column("msg_idx")
    partitions = pl.Series([m.partition for m in messages], dtype=pl.UInt16)
    offsets = pl.Series([m.offset for m in messages], dtype=pl.UInt64)
    topic = messages[0].topic if messages else ""
    return frame.with_columns(
        pl.lit(topic).alias("src_topic"),
        partitions.gather(idx).alias("src_partition"),
        offsets.gather(idx).alias("src_offset"),
    )


def readings_tail(
    frame: pl.DataFrame,
    messages: Sequence[RawMessage],
    now_ms: int,
    validate: ReadingValidator,
    duplicates: DuplicateFilter,
    registry: Registry,
) -> tuple[pa.Table, pl.DataFrame, int]:
    """The shared tail of meter.readings and meter.frames: validate → drop duplicates → tag tenant.

    ``frame`` has the :data:`~pipeline.codecs.frames.READINGS_SCHEMA` columns (plus an optional
    ``flags``). Returns the readings_store rows, the refused rows (``reason``/``detail``, in
    message order) for the caller to turn into dead letters, and the exact duplicates dropped.
    """
    accepted, invalid = validate(frame, now_ms)
    fresh, conflicts, n_dups = duplicates(accepted)
    tagged, unknown = tag_frame(fresh, registry)
    bad = pl.concat([invalid, conflicts, unknown], how="diagonal_relaxed")
    rows = _source_columns(tagged, messages) if tagged.height else tagged
    return S.readings_table(rows), bad.sort(["msg_idx", "rec_idx"], maintain_order=True), n_dups


# A derive stage: accepted readings of a batch (with ts_ms and src_offset) → extra tables to write
Derive = Callable[[pl.DataFrame, int], dict[str, pa.Table]]


def compose(*stages: Derive | None) -> Derive | None:
    """One derive stage running the given ones in order (``None``s skipped; ``None`` if none is left)."""
    live = [s for s in stages if s is not None]
    if len(live) <= 1:
        return live[0] if live else None

    def derive(rows: pl.DataFrame, now_ms: int) -> dict[str, pa.Table]:
        out: dict[str, pa.Table] = {}
        for stage in live:
            out |= stage(rows, now_ms)
        return out

    return derive


def readings_frame(table: pa.Table) -> pl.DataFrame:
    """The readings_store rows of a batch as a frame with epoch-ms ``ts_ms`` (what derive stages take)."""
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame.with_columns(pl.col("ts").dt.epoch("ms").alias("ts_ms"))


class ReadingsProcessor:
    """meter.readings: decode → validate → drop duplicates → tag tenant → readings_store rows."""

    def __init__(
        self,
        decoder: Decoder,
        validator: ReadingValidator,
        registry: Registry,
        duplicates: DuplicateFilter,
        derive: Derive | None = None,
    ) -> None:
        self._decoder = decoder
        self._validate = validator
        self._registry = registry
        self._duplicates = duplicates
        self._derive = derive

    def __call__(self, messages: Sequence[RawMessage], now_ms: int) -> BatchResult:
        frame, rejects = decode_readings(messages, self._decoder)
        table, bad, n_dups = readings_tail(frame, messages, now_ms, self._validate, self._duplicates, self._registry)
        rejects += rows_to_rejects(bad, messages)
        tables = {"readings_store": table} if table.num_rows else {}
        if self._derive is not None and table.num_rows:
            tables |= self._derive(readings_frame(table), now_ms)
        return BatchResult(tables, rejects, table.num_rows, n_dups)


class SimUsageProcessor:
    """sim.usage: decode → validate identifiers → tag tenant by ICCID → pseudonymise."""

    def __init__(
        self,
        decoder: Decoder,
        validator: SimUsageValidator,
        registry: Registry,
        pseudonyms: Pseudonymizer,
        detect: Derive | None = None,
    ) -> None:
        self._decoder = decoder
        self._validate = validator
        self._registry = registry
        self._pseudonyms = pseudonyms
        self._detect = detect  # the SIM anomaly rules (pipeline.anomaly.SimAlerts)

    def __call__(self, messages: Sequence[RawMessage], now_ms: int) -> BatchResult:
        frame, rejects = decode_sim_usage(messages, self._decoder)
        accepted, invalid = self._validate(frame, now_ms)
        tagged, unknown = tag_frame(accepted, self._registry, key="iccid", kind="sim")
        bad = pl.concat(
            [
                invalid.with_columns(pl.lit(-1, pl.Int32).alias("rec_idx")),
                unknown.with_columns(pl.lit(-1, pl.Int32).alias("rec_idx")),
            ],
            how="diagonal_relaxed",
        )
        rejects += rows_to_rejects(bad.sort("msg_idx", maintain_order=True), messages, reading_payload=False)
        if tagged.height == 0:
            return BatchResult({}, rejects)
        p = self._pseudonyms
        tenants = tagged.get_column("tenant_id").to_list()
        tagged = tagged.with_columns(
            pl.Series("sim_id", [p(t, i) for t, i in zip(tenants, tagged.get_column("iccid").to_list(), strict=True)]),
            pl.Series("imei_id", [p(t, i) for t, i in zip(tenants, tagged.get_column("imei").to_list(), strict=True)]),
        )
        rows = _source_columns(tagged, messages)
        usage = S.sim_usage_table(rows)
        identity = S.sim_identity_table(rows)
        tables = {"sim_usage_store": usage, "sim_identity": identity}
        if self._detect is not None:
            tables |= self._detect(rows, now_ms)
        return BatchResult(tables, rejects, usage.num_rows)


class RegistryProcessor:
    """registry.devices: update the registry table and mirror it to device_registry_store."""

    def __init__(self, decoder: Decoder, registry: Registry, pseudonyms: Pseudonymizer) -> None:
        self._decoder = decoder
        self._registry = registry
        self._pseudonyms = pseudonyms

    def __call__(self, messages: Sequence[RawMessage], now_ms: int) -> BatchResult:
        items, rejects = decode_registrations(messages, self._decoder)
        rows: list[dict] = []
        for key, record, msg_idx in items:
            msg = messages[msg_idx]
            if record is None:
                previous = self._registry.delete(key, msg.partition)
                if previous is not None:
                    rows.append(self._row(previous.record, msg, now_ms, deleted=True))
                continue
            problem = self._problem(key, record)
            if problem:
                rejects.append(Rejected(Reason.SCHEMA_MISMATCH, problem, msg))
                continue
            self._registry.put(record, msg.value, msg.partition)
            rows.append(self._row(record, msg, now_ms, deleted=False))
        table = S.registry_table(rows)
        return BatchResult({"device_registry_store": table} if rows else {}, rejects, len(rows))

    @staticmethod
    def _problem(key: str, record: dict) -> str:
        if not record.get("tenant_id"):
            return "registration without tenant_id"
        if record.get("subject_id") != key:
            return f"message key {key!r} differs from subject_id {record.get('subject_id')!r}"
        return ""

    def _row(self, record: dict, msg: RawMessage, now_ms: int, *, deleted: bool) -> dict:
        tenant = str(record["tenant_id"])
        is_sim = record.get("subject_type") == "sim"
        sim_id = self._pseudonyms(tenant, record.get("sim_iccid") or (record["subject_id"] if is_sim else None))
        subject = sim_id if is_sim else str(record["subject_id"])
        attrs = {k: v for k, v in record.items() if k != "sim_iccid" and v is not None}  # as the registry keeps it
        attrs["subject_id"] = subject
        if sim_id:
            attrs["sim_id"] = sim_id
        return {
            "tenant_id": tenant,
            "site_id": record.get("site_id") or "",
            "branch": record.get("branch") or "",
            "subject_id": subject,
            "subject_type": record.get("subject_type") or "device",
            "kind": record.get("kind") or "",
            "timezone": record.get("timezone") or "UTC",
            "gateway_id": record.get("gateway_id") or "",
            "sim_id": sim_id,
            "attributes": json.dumps(attrs, separators=(",", ":"), default=str),
            "deleted": int(deleted),
            "version": msg.offset,
            "updated_at": int(record.get("updated_at") or msg.timestamp_ms or now_ms),
        }
