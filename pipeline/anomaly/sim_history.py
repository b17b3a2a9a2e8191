"""Bounded per-SIM history shared by the SIM rules: de-duplication, lateness, contiguity, plans.

Usage records arrive late (up to :data:`LATENESS_MS`) and out of order. Each stateful SIM
rule keeps a :class:`SimHistory`: the SIM's recent records and its *watermark* (newest
``period_start`` accepted). A record is accepted once — the first copy of (tenant, SIM,
period_start, period_end) wins, like ``sim_usage_store`` — and only if its period starts
no earlier than watermark − lateness; anything older is ignored by the rules (it is still
stored by the pipeline).

*Settled* records: a record that could still arrive has ``period_start ≥ watermark − lateness``.
So an evaluation that depends on every earlier record of the SIM is final once the records
cover [watermark − lateness, its own start) without a hole (one contiguous run of periods),
or once its start is itself at or below that horizon. Rules that cannot retract what they
emitted (event rules, the daily spike) evaluate only settled records, which makes their
output independent of how records are ordered and batched within the lateness bound.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from pipeline.anomaly.catalogue import RULES
from pipeline.anomaly.inputs import Context
from pipeline.anomaly.model import empty_evaluations, evaluations
from pipeline.tenancy import Registry

__all__ = ["DAY_MS", "HOUR_MS", "KEY", "LATENESS_MS", "SimHistory", "finish", "plans", "runs"]

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
LATENESS_MS = 48 * HOUR_MS
KEY = ["tenant_id", "sim_id"]
_PERIOD = ["period_start_ms", "period_end_ms"]
_BASE: dict[str, pl.DataType] = {
    "tenant_id": pl.Utf8(),
    "site_id": pl.Utf8(),
    "sim_id": pl.Utf8(),
    "period_start_ms": pl.Int64(),
    "period_end_ms": pl.Int64(),
}


class SimHistory:
    """One rule's retained records per SIM (``columns`` besides the key and period) and the SIMs' watermarks.

    ``state`` = extra per-record columns the rule maintains (e.g. "already evaluated"), with
    the value a new record starts with. Records older than watermark − ``retain_ms`` are dropped
    on :meth:`commit` unless the rule's ``keep`` expression holds.
    """

    def __init__(
        self,
        columns: Mapping[str, pl.DataType],
        *,
        retain_ms: int,
        state: Mapping[str, pl.Expr] | None = None,
        lateness_ms: int = LATENESS_MS,
    ) -> None:
        if retain_ms <= lateness_ms:
            raise ValueError("retain_ms must exceed lateness_ms (late records are de-duplicated against the history)")
        self.lateness_ms = lateness_ms
        self.retain_ms = retain_ms
        self._columns = {**_BASE, **columns}
        self._state = dict(state or {})
        probe = pl.DataFrame(schema=self._columns).with_columns(e.alias(n) for n, e in self._state.items())
        self.records = probe
        self.marks = pl.DataFrame(schema={"tenant_id": pl.Utf8(), "sim_id": pl.Utf8(), "watermark_ms": pl.Int64()})

    def ingest(self, usage: pl.DataFrame) -> pl.DataFrame:
        """Accept the batch's new records; return the *work* frame of every SIM that got one.

        Work = the SIM's retained and new records, sorted by SIM and period start, with
        ``fresh`` (accepted in this batch), ``since_ms`` (earliest fresh start of the SIM) and
        ``watermark_ms`` (after this batch). Empty when nothing new was accepted.
        """
        cols = [pl.col(c).cast(t) if c in usage.columns else pl.lit(None, t).alias(c) for c, t in self._columns.items()]
        batch = (
            usage.select(cols)
            .filter(pl.all_horizontal(pl.col(c).is_not_null() for c in (*KEY, *_PERIOD)))
            .unique([*KEY, *_PERIOD], keep="first", maintain_order=True)
        )
        old = self.records.join(batch.select(KEY).unique(), on=KEY, how="semi")
        in_time = pl.col("period_start_ms") >= pl.col("watermark_ms") - self.lateness_ms
        batch = (
            batch.join(old.select(*KEY, *_PERIOD), on=[*KEY, *_PERIOD], how="anti")
            .join(self.marks, on=KEY, how="left")
            .filter(pl.col("watermark_ms").is_null() | in_time)
            .drop("watermark_ms")
            .with_columns(e.alias(n) for n, e in self._state.items())
        )
        if batch.height == 0:
            return batch.with_columns(
                pl.lit(True).alias("fresh"), pl.lit(0).alias("since_ms"), pl.lit(0).alias("watermark_ms")
            ).clear()
        marks = batch.group_by(KEY).agg(
            pl.col("period_start_ms").min().alias("since_ms"), pl.col("period_start_ms").max().alias("watermark_ms")
        )
        self.marks = (
            pl.concat([self.marks, marks.select(self.marks.columns)]).group_by(KEY).agg(pl.col("watermark_ms").max())
        )
        affected = marks.select(*KEY, "since_ms").join(self.marks, on=KEY, how="left")
        old = old.join(affected.select(KEY), on=KEY, how="semi")
        return (
            pl.concat([old.with_columns(fresh=pl.lit(False)), batch.with_columns(fresh=pl.lit(True))])
            .sort([*KEY, "period_start_ms"])
            .join(affected, on=KEY, how="left", maintain_order="left")
        )

    def commit(self, work: pl.DataFrame, keep: pl.Expr | None = None) -> pl.DataFrame:
        """Store ``work`` (with its state columns updated) as the SIMs' history; return the rows dropped."""
        if work.height == 0:
            return work
        old = pl.col("period_start_ms") < pl.col("watermark_ms") - self.retain_ms
        if keep is not None:
            old = old & ~keep.fill_null(False)
        work = work.with_columns(__drop=old)
        self.records = pl.concat(
            [
                self.records.join(work.select(KEY).unique(), on=KEY, how="anti"),
                work.filter(~pl.col("__drop")).select(self.records.columns),
            ]
        )
        return work.filter(pl.col("__drop")).drop("__drop")


def runs(work: pl.DataFrame, lateness_ms: int = LATENESS_MS) -> pl.DataFrame:
    """Add ``run`` (id of the contiguous run of periods a record is in), ``run_start`` and ``horizon_ms``.

    ``settled`` = no record that may still arrive can precede it: its start is at or below the
    horizon (watermark − lateness) or its run starts there (see the module doc).
    """
    prev_end = pl.col("period_end_ms").cum_max().shift(1).over(KEY)
    gap = prev_end.is_null() | (prev_end < pl.col("period_start_ms"))
    horizon = pl.col("watermark_ms") - lateness_ms
    return (
        work.with_columns(run=gap.cast(pl.Int64).cum_sum().over(KEY), horizon_ms=horizon)
        .with_columns(run_start=pl.col("period_start_ms").min().over([*KEY, "run"]))
        .with_columns(settled=(pl.col("period_start_ms") <= horizon) | (pl.col("run_start") <= horizon))
    )


def plans(registry: Registry, frame: pl.DataFrame) -> pl.DataFrame:
    """Per SIM of ``frame`` (tenant_id, sim_id, iccid): ``stationary``, ``allowance_bytes``, ``cycle_start_day``.

    From the SIM's registration (keyed by ICCID); nulls when the SIM is not registered (or the
    batch has no ``iccid`` column).
    """
    schema = {"tenant_id": pl.Utf8(), "sim_id": pl.Utf8(), "stationary": pl.Boolean(),
              "allowance_bytes": pl.Int64(), "cycle_start_day": pl.Int64()}  # fmt: skip
    if "iccid" not in frame.columns or frame.height == 0:
        return pl.DataFrame(schema=schema)
    pairs = frame.select(*KEY, pl.col("iccid").cast(pl.Utf8)).drop_nulls().unique(KEY, keep="last")
    rows = []
    for tenant, sim, iccid in pairs.iter_rows():
        reg = registry.get(iccid)
        rec = reg.record if reg is not None and reg.tenant_id == tenant else {}
        allowance, day = rec.get("plan_allowance_bytes"), rec.get("plan_cycle_start_day")
        rows.append((tenant, sim, bool(rec.get("stationary")), int(allowance) if allowance else None,
                     int(day) if day else None))  # fmt: skip
    return pl.DataFrame(rows, schema=schema, orient="row")


def finish(frame: pl.DataFrame, ctx: Context, rule: str) -> pl.DataFrame:
    """Drop rows of tenants/sites where the rule is disabled; conform to the evaluation schema."""
    if frame.height == 0:
        return empty_evaluations()
    frame = ctx.policy.frame(rule, frame.with_columns(pl.col("site_id").fill_null("")), ["enabled"])
    frame = frame.filter(pl.col("enabled")).rename({"sim_id": "subject_id"})
    frame = frame.with_columns(pl.col("firing").fill_null(False), pl.col("message").fill_null(""))
    return evaluations(frame, rule=rule, subject_type="sim", severity=int(RULES[rule].severity))
