"""SIM usage rollups: per SIM per day, per SIM per billing cycle, per tenant per day.

Days are **UTC** days of ``period_start``: provider records are UTC-hour periods and a
record is counted whole (its counters are integers), so UTC days split nothing, make
cycle-to-date = sum of days exactly, and match the SQL views (ClickHouse cannot convert
to a per-row time zone). Billing cycles start on day ``cycle_start_day`` (registry
``plan_cycle_start_day``, default 1) of every month, or on the month's last day when the
month is shorter (start day 31: Jan 31–Feb 27, Feb 28–Mar 30, Mar 31–Apr 29, …).

Everything is a pure function of the set of records: records are de-duplicated on
(SIM, period_start, period_end) keeping the first (``seq`` = source offset, then row
order, like ``sim_usage_store``), so a late or re-delivered record restates its day and
cycle and nothing else.
"""

from __future__ import annotations

import polars as pl

__all__ = ["SIM_COUNTERS", "billing_cycle", "dedup_sim_records", "sim_cycles", "sim_daily", "tenant_sim_daily"]

SIM_COUNTERS = ("bytes_up", "bytes_down", "sms_mo", "sms_mt", "voice_seconds", "csd_seconds", "sessions")


def dedup_sim_records(records: pl.DataFrame, *, sim_key: str = "sim_id") -> pl.DataFrame:
    """One row per (tenant_id, SIM, period_start, period_end), the first by ``seq`` then row order, plus ``day``."""
    order = ["seq"] if "seq" in records.columns else []
    df = records.with_row_index("__ord").sort([*order, "__ord"], nulls_last=True)
    df = df.unique(["tenant_id", sim_key, "period_start", "period_end"], keep="first", maintain_order=True)
    start = pl.col("period_start")
    if df.schema["period_start"].is_integer():
        start = pl.from_epoch(start, time_unit="ms")
    return df.drop("__ord").with_columns(day=start.dt.date())


def billing_cycle(day: pl.Expr, start_day: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """``(cycle_start, cycle_end)`` (Date, end exclusive) of the cycle holding ``day``."""
    sd = start_day.fill_null(1).clip(1, 31).cast(pl.Int64)

    def start_in(month_start: pl.Expr) -> pl.Expr:
        dim = month_start.dt.month_end().dt.day().cast(pl.Int64)
        return month_start + pl.duration(days=pl.min_horizontal(sd, dim) - 1)

    this = day.dt.month_start()
    this_start = start_in(this)
    start = pl.when(day >= this_start).then(this_start).otherwise(start_in(this.dt.offset_by("-1mo")))
    return start, start_in(start.dt.month_start().dt.offset_by("1mo"))


def sim_daily(records: pl.DataFrame, *, sim_key: str = "sim_id") -> pl.DataFrame:
    """tenant_id, SIM, day (UTC Date), the counters summed, ``records``."""
    df = dedup_sim_records(records, sim_key=sim_key)
    return (df.group_by(["tenant_id", sim_key, "day"])
            .agg(*(pl.col(c).sum() for c in SIM_COUNTERS), pl.len().cast(pl.UInt32).alias("records"))
            .sort(["tenant_id", sim_key, "day"]))  # fmt: skip


def tenant_sim_daily(records: pl.DataFrame, *, sim_key: str = "sim_id") -> pl.DataFrame:
    """tenant_id, day, the counters summed over the tenant's SIMs, ``sims`` (distinct SIMs), ``records``."""
    df = dedup_sim_records(records, sim_key=sim_key)
    return (df.group_by(["tenant_id", "day"])
            .agg(*(pl.col(c).sum() for c in SIM_COUNTERS), pl.col(sim_key).n_unique().cast(pl.UInt32).alias("sims"),
                 pl.len().cast(pl.UInt32).alias("records"))
            .sort(["tenant_id", "day"]))  # fmt: skip


def sim_cycles(records: pl.DataFrame, plans: pl.DataFrame | None = None, *, sim_key: str = "sim_id") -> pl.DataFrame:
    """Per SIM and billing cycle: tenant_id, SIM, cycle_start, cycle_end (exclusive), counters, records,
    ``allowance_bytes`` and ``used_ratio`` = (bytes_up + bytes_down) / allowance (null without a plan).

    ``plans``: SIM key + ``cycle_start_day`` [+ ``allowance_bytes``]; else those columns of
    ``records`` if present; a SIM without a start day cycles on the 1st.
    """
    df = sim_daily(records, sim_key=sim_key)
    if plans is not None:
        df = df.join(plans, on=sim_key, how="left")
    else:
        cols = [c for c in ("cycle_start_day", "allowance_bytes") if c in records.columns]
        if cols:
            df = df.join(records.group_by(sim_key).agg(pl.col(c).drop_nulls().last() for c in cols), on=sim_key,
                         how="left")  # fmt: skip
    for c, t in (("cycle_start_day", pl.Int64), ("allowance_bytes", pl.Int64)):
        if c not in df.columns:
            df = df.with_columns(pl.lit(None, dtype=t).alias(c))
    start, end = billing_cycle(pl.col("day"), pl.col("cycle_start_day"))
    out = (df.with_columns(cycle_start=start, cycle_end=end)
           .group_by(["tenant_id", sim_key, "cycle_start", "cycle_end"])
           .agg(*(pl.col(c).sum() for c in SIM_COUNTERS), pl.col("records").sum(),
                pl.col("allowance_bytes").drop_nulls().last())
           .with_columns(used_ratio=(pl.col("bytes_up") + pl.col("bytes_down")) / pl.col("allowance_bytes"))
           .sort(["tenant_id", sim_key, "cycle_start"]))  # fmt: skip
    return out
