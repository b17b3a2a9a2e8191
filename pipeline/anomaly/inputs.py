"""What rules see: one batch of the stream, as polars frames, plus the registry.

A rule is a stateful callable ``rule(batch, ctx) -> evaluation frame`` (see
:mod:`pipeline.anomaly.model`). Its state is bounded (per subject, a few samples or
a window of intervals) and lives in the rule object; what must survive a restart
(open episodes) lives in the :class:`~pipeline.anomaly.lifecycle.AlertTracker`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import polars as pl

from pipeline.anomaly.catalogue import RuleSpec
from pipeline.anomaly.policy import Policy
from pipeline.tenancy import Registry

__all__ = ["Context", "MeterBatch", "MeterRule", "SimBatch", "SimRule"]


@dataclass(frozen=True, slots=True)
class MeterBatch:
    """Accepted, tenant-tagged meter data of one batch.

    ``readings``: tenant_id, site_id, device_id, quantity, ts_ms (Int64), value, flags (UInt32),
    src_offset (long format: one row per channel), and the numbers ``_did``, ``_sid`` and ``_qid`` of its
    device, series and quantity (:class:`~pipeline.anomaly.numbering.Numbering`, whose ``batch`` builds
    this; ``quantities`` maps quantity codes to their ``_qid``: find rows with ``numbering.rows_of``).
    ``intervals``: the intervals the derive stage (re)computed for this batch: tenant_id, site_id,
    device_id, quantity, interval_start_ms, measured, estimated, flags, n_readings (empty when
    derivation is off). ``events``: register events of the batch: tenant_id, site_id, device_id,
    quantity, kind (rollover | reset | replaced | implausible_jump | gap), ts_ms, prev_ts_ms,
    prev_value, value, delta, cap.
    """

    readings: pl.DataFrame
    intervals: pl.DataFrame
    events: pl.DataFrame
    quantities: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SimBatch:
    """Accepted SIM usage records of one batch (one row per record): tenant_id, site_id, sim_id,
    imei_id (pseudonyms), period_start_ms, period_end_ms, bytes_up, bytes_down, sms_mo, sms_mt,
    voice_seconds, csd_seconds, sessions, mcc, mnc, home_mcc, home_mnc, roaming (UInt8),
    plan_id, iccid (raw, for registry lookups only; never published)."""

    usage: pl.DataFrame


@dataclass(frozen=True, slots=True)
class Context:
    policy: Policy
    registry: Registry
    now_ms: int  # wall clock of the batch, epoch ms
    # rule -> subjects with an open episode of it, when a lifecycle consumes the evaluations: a rule may
    # then leave out the non-firing rows of other subjects (no-ops to the lifecycle). None: emit every row.
    open: Mapping[str, frozenset[str]] | None = None


class MeterRule(Protocol):
    spec: RuleSpec

    def __call__(self, batch: MeterBatch, ctx: Context) -> pl.DataFrame: ...


class SimRule(Protocol):
    spec: RuleSpec

    def __call__(self, batch: SimBatch, ctx: Context) -> pl.DataFrame: ...
