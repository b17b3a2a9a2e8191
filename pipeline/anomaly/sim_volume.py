"""The SIM volume rules: ``sim_data_spike`` (per UTC day) and ``sim_over_plan`` (cycle to date).

Both keep per-SIM daily byte totals (bytes up + down per UTC day of ``period_start``, like
:func:`pipeline.derive.sim.sim_daily`) beside the rule's recent records.
"""

from __future__ import annotations

import polars as pl

from pipeline.anomaly.catalogue import RULES
from pipeline.anomaly.inputs import Context, SimBatch
from pipeline.anomaly.model import Severity, empty_evaluations
from pipeline.anomaly.sim_history import DAY_MS, HOUR_MS, KEY, LATENESS_MS, SimHistory, finish, plans, runs
from pipeline.derive.sim import billing_cycle

__all__ = ["SimDataSpike", "SimOverPlan"]

_START = pl.col("period_start_ms")
_DAY = (_START - _START.mod(DAY_MS)).alias("day_ms")
_DAYS = {"tenant_id": pl.Utf8(), "sim_id": pl.Utf8(), "site_id": pl.Utf8(), "day_ms": pl.Int64(), "bytes": pl.Int64(),
         "done": pl.Boolean()}  # fmt: skip
_MB = 1_000_000


def _with_bytes(usage: pl.DataFrame) -> pl.DataFrame:
    if usage.height == 0 or "bytes_up" not in usage.columns:
        return usage
    total = pl.col("bytes_up").cast(pl.Int64).fill_null(0) + pl.col("bytes_down").cast(pl.Int64).fill_null(0)
    return usage.with_columns(total.alias("bytes"))


def _add_days(days: pl.DataFrame, work: pl.DataFrame) -> pl.DataFrame:
    """Daily totals plus the fresh records of ``work`` (a day already evaluated stays evaluated)."""
    fresh = (work.filter(pl.col("fresh")).group_by([*KEY, _DAY])
             .agg(pl.col("site_id").last(), pl.col("bytes").sum(), pl.lit(False).alias("done")))  # fmt: skip
    both = pl.concat([days, fresh.select(days.columns)]).group_by([*KEY, "day_ms"], maintain_order=True)
    return both.agg(pl.col("site_id").last(), pl.col("bytes").sum(), pl.col("done").any()).select(days.columns)


def _split(days: pl.DataFrame, work: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(the batch's SIMs' daily totals with its fresh records added, the other SIMs' daily totals)."""
    sims = work.select(KEY).unique()
    return _add_days(days.join(sims, on=KEY, how="semi"), work), days.join(sims, on=KEY, how="anti")


class SimOverPlan:
    """Cycle-to-date bytes / plan allowance ≥ ``warning_ratio`` (critical from ``critical_ratio``), per record.

    The cycle starts on the registration's ``plan_cycle_start_day`` (see ``billing_cycle``);
    SIMs without a plan allowance are not evaluated. A late record raises the totals of every
    later record of its cycle: those are re-evaluated and emitted when their outcome changes.
    """

    def __init__(self) -> None:
        self.spec = RULES["sim_over_plan"]
        self._history = SimHistory({"bytes": pl.Int64()}, retain_ms=LATENESS_MS + DAY_MS + HOUR_MS,
                                   state={"out": pl.lit(None, pl.Int8)})  # fmt: skip
        self._days = pl.DataFrame(schema=_DAYS)

    def __call__(self, batch: SimBatch, ctx: Context) -> pl.DataFrame:
        work = self._history.ingest(_with_bytes(batch.usage))
        if work.height == 0:
            return empty_evaluations()
        days, rest = _split(self._days, work)
        work = work.with_columns(_DAY).with_columns(intra=pl.col("bytes").cum_sum().over([*KEY, "day_ms"]))
        ev = (work.filter(_START >= pl.col("since_ms")).join(plans(ctx.registry, batch.usage), on=KEY)
              .filter(pl.col("allowance_bytes") > 0))  # fmt: skip
        date = pl.from_epoch("day_ms", time_unit="ms").dt.date()
        cycle_start, _ = billing_cycle(date, pl.col("cycle_start_day"))
        ev = ev.with_columns(cycle_ms=cycle_start.cast(pl.Datetime("ms", "UTC")).dt.epoch("ms"))
        prior = (ev.select(*KEY, "day_ms", "cycle_ms").unique()
                 .join(days.select(*KEY, pl.col("day_ms").alias("d"), pl.col("bytes").alias("b")), on=KEY)
                 .filter((pl.col("d") >= pl.col("cycle_ms")) & (pl.col("d") < pl.col("day_ms")))
                 .group_by([*KEY, "day_ms"]).agg(pl.col("b").sum().alias("prior")))  # fmt: skip
        ev = ev.join(prior, on=[*KEY, "day_ms"], how="left").with_columns(
            used=pl.col("prior").fill_null(0) + pl.col("intra")
        )
        ev = ctx.policy.frame(self.spec.id, ev.with_columns(pl.col("site_id").fill_null("")),
                              ["warning_ratio", "critical_ratio"])  # fmt: skip
        ratio = (pl.col("used").cast(pl.Float64) / pl.col("allowance_bytes").cast(pl.Float64)).round(6)

        def reached(name: str) -> pl.Expr:  # in whole bytes: float ratios are not exact (0.8 × 10 MB ≠ 7999999.99…)
            return pl.col("used") >= (pl.col(name) * pl.col("allowance_bytes") - 1e-6).ceil().cast(pl.Int64)

        critical = reached("critical_ratio")
        code = pl.when(critical).then(int(Severity.CRITICAL)).when(reached("warning_ratio"))
        ev = ev.with_columns(ratio=ratio, code=code.then(int(Severity.WARNING)).otherwise(0).cast(pl.Int8))
        changed = ev.filter(pl.col("out").is_null() | (pl.col("out") != pl.col("code")))
        out = changed.select(
            *KEY, "site_id", _START.alias("ts_ms"), (pl.col("code") > 0).alias("firing"),
            pl.when(pl.col("code") > 0).then(pl.col("code")).otherwise(int(self.spec.severity)).alias("severity"),
            pl.col("ratio").alias("observed"),
            pl.when(critical).then(pl.col("critical_ratio")).otherwise(pl.col("warning_ratio")).alias("threshold"),
            pl.format("{} MB of a {} MB plan used this cycle ({}%)", (pl.col("used") / _MB).round(1),
                      (pl.col("allowance_bytes") / _MB).round(1), (pl.col("ratio") * 100).round(1)).alias("message"),
        )  # fmt: skip
        codes = ev.select(*KEY, "period_start_ms", pl.col("code").alias("new"))
        work = work.join(codes, on=[*KEY, "period_start_ms"], how="left").with_columns(out=pl.coalesce("new", "out"))
        self._history.commit(work)
        keep = pl.col("day_ms") >= pl.col("watermark_ms") - 35 * DAY_MS  # the longest cycle plus the lateness
        days = days.join(self._history.marks, on=KEY, how="left").filter(keep).select(rest.columns)
        self._days = pl.concat([rest, days])
        return finish(out, ctx, self.spec.id)


class SimDataSpike:
    """Daily bytes: robust z = 0.6745·(x − median)/MAD over the SIM's previous daily totals > ``threshold``.

    A day is evaluated once, when a record of a later day was seen and it is settled (no record
    that may still arrive could change it or its history, :mod:`.sim_history`). History = the
    SIM's days with records in the ``window_days`` before; needs ``min_history_days`` of them
    and MAD > 0 (else no evaluation). The absolute floor applies to the excess: the day must
    also exceed the median by more than ``floor_bytes`` (M2M SIMs repeat their daily volume
    within a percent or two, so a z-score alone fires on a few kB; and a typical gateway SIM
    uses about 1 MB a day, so a floor on the day's own total would filter nothing).
    ``observed`` is the day's bytes, ``threshold`` the level it had to exceed
    (median + max(floor, threshold·MAD/0.6745)).
    """

    def __init__(self) -> None:
        self.spec = RULES["sim_data_spike"]
        self._history = SimHistory({"bytes": pl.Int64()}, retain_ms=LATENESS_MS + DAY_MS + HOUR_MS)
        self._days = pl.DataFrame(schema=_DAYS)

    def __call__(self, batch: SimBatch, ctx: Context) -> pl.DataFrame:
        work = self._history.ingest(_with_bytes(batch.usage))
        if work.height == 0:
            return empty_evaluations()
        days, rest = _split(self._days, work)
        work = runs(work)
        last = work.group_by([*KEY, _DAY], maintain_order=True).agg(  # work is sorted by period start
            pl.col("period_end_ms").last().alias("q_end"), pl.col("run_start").last().alias("q_run_start")
        )
        marks = self._history.marks.join(work.select(KEY).unique(), on=KEY, how="semi")
        days = days.join(marks, on=KEY, how="left").join(last, on=[*KEY, "day_ms"], how="left")
        end, horizon = pl.col("day_ms") + DAY_MS, pl.col("watermark_ms") - self._history.lateness_ms
        covered = (pl.col("q_end") >= end) & (pl.col("q_run_start") <= horizon)
        ready = ~pl.col("done") & (pl.col("watermark_ms") >= end) & ((end <= horizon) | covered.fill_null(False))
        days = days.with_columns(ready=ready.fill_null(False))
        cand = days.filter("ready").select(*KEY, "site_id", "day_ms", "bytes")
        out = self._evaluate(cand, days, ctx)
        days = days.with_columns(done=pl.col("done") | pl.col("ready"))
        self._history.commit(work)
        days = ctx.policy.frame(self.spec.id, days.with_columns(pl.col("site_id").fill_null("")), ["window_days"])
        keep = pl.col("day_ms") >= pl.col("watermark_ms") - (pl.col("window_days") + 3) * DAY_MS
        self._days = pl.concat([rest, days.filter(keep).select(rest.columns)])
        return finish(out, ctx, self.spec.id)

    def _evaluate(self, cand: pl.DataFrame, days: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        if cand.height == 0:
            return cand
        names = ["window_days", "threshold", "floor_bytes", "min_history_days"]
        cand = ctx.policy.frame(self.spec.id, cand.with_columns(pl.col("site_id").fill_null("")), names)
        hist = (cand.select(*KEY, "day_ms", "window_days")
                .join(days.select(*KEY, pl.col("day_ms").alias("h_day"), pl.col("bytes").alias("h")), on=KEY)
                .filter((pl.col("h_day") < pl.col("day_ms"))
                        & (pl.col("h_day") >= pl.col("day_ms") - pl.col("window_days") * DAY_MS))
                .group_by([*KEY, "day_ms"]).agg(pl.col("h").cast(pl.Float64)))  # fmt: skip
        mad = pl.col("h").list.eval((pl.element() - pl.element().median()).abs().median()).list.first()
        cand = (cand.join(hist, on=[*KEY, "day_ms"], how="left")
                .with_columns(n=pl.col("h").list.len().fill_null(0), median=pl.col("h").list.median(), mad=mad)
                .filter((pl.col("n") >= pl.col("min_history_days")) & (pl.col("mad") > 0)))  # fmt: skip
        x = pl.col("bytes").cast(pl.Float64)
        z = 0.6745 * (x - pl.col("median")) / pl.col("mad")
        # rounded to the cent of a byte: polars' kernels may differ in the last bit with the frame's
        # length, and the level must not depend on how the records were batched
        level = pl.col("median") + pl.max_horizontal(
            pl.col("floor_bytes").cast(pl.Float64), pl.col("threshold") * pl.col("mad") / 0.6745
        )
        return cand.select(
            *KEY, "site_id", pl.col("day_ms").alias("ts_ms"),
            ((z > pl.col("threshold")) & (x - pl.col("median") > pl.col("floor_bytes"))).alias("firing"),
            x.alias("observed"), level.round(2).alias("threshold"),
            pl.format("{} MB on {} (robust z {}, median {} MB over {} days)", (x / _MB).round(2),
                      pl.from_epoch("day_ms", time_unit="ms").dt.date(), z.round(1), (pl.col("median") / _MB).round(2),
                      "n").alias("message"),
        )  # fmt: skip
