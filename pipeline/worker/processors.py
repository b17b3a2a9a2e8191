"""The hot path as pure batch functions: raw Kafka messages in, Arrow rows and rejections out.

Each processor takes the messages of one consumed batch and returns a
:class:`BatchResult`; the Faust agents only move messages in and results out,
so the same code runs in the worker, the benchmark and the in-memory tests.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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


class ReadingsProcessor:
    """meter.readings: decode → validate → drop duplicates → tag tenant → readings_store rows."""

    def __init__(
        self, decoder: Decoder, validator: ReadingValidator, registry: Registry, duplicates: DuplicateFilter
    ) -> None:
        self._decoder = decoder
        self._validate = validator
        self._registry = registry
        self._duplicates = duplicates

    def __call__(self, messages: Sequence[RawMessage], now_ms: int) -> BatchResult:
        frame, rejects = decode_readings(messages, self._decoder)
        accepted, invalid = self._validate(frame, now_ms)
        fresh, conflicts, n_dups = self._duplicates(accepted)
        tagged, unknown = tag_frame(fresh, self._registry)
        bad = pl.concat([invalid, conflicts, unknown], how="diagonal_relaxed")
        rejects += rows_to_rejects(bad.sort(["msg_idx", "rec_idx"], maintain_order=True), messages)
        rows = _source_columns(tagged, messages) if tagged.height else tagged
        table = S.readings_table(rows)
        return BatchResult({"readings_store": table} if table.num_rows else {}, rejects, table.num_rows, n_dups)


class SimUsageProcessor:
    """sim.usage: decode → validate identifiers → tag tenant by ICCID → pseudonymise."""

    def __init__(
        self, decoder: Decoder, validator: SimUsageValidator, registry: Registry, pseudonyms: Pseudonymizer
    ) -> None:
        self._decoder = decoder
        self._validate = validator
        self._registry = registry
        self._pseudonyms = pseudonyms

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
        return BatchResult({"sim_usage_store": usage, "sim_identity": identity}, rejects, usage.num_rows)


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
        attrs = {k: v for k, v in record.items() if k not in ("sim_iccid",)}
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
