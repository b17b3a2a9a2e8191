"""Generator fuel per interval from fuel-level samples and engine state; runtime from its register.

For consecutive level samples (L0 at t0, L1 at t1) of one generator, with the engine
state at t1 (the last state sample at or before t1; none known = stopped):

* L1 − L0 > ``refuel_min_l`` → a refuel of L1 − L0 litres (never negative use), whatever the state;
* otherwise, running → L0 − L1 is fuel used; stopped → L0 − L1 is an ``unexplained_drop``
  (theft/leak: the ``fuel_drop`` anomaly decides, this only reports it);
* across a reading gap (t1 − t0 > ``gap_factor`` × the series' expected period, when given)
  the state in between is unknown: the engine counts as running if it ran at t0 or at t1
  (a generator often runs through the grid outage that cut its connectivity), so such a
  drop is fuel used, not a theft.

Each pair's litres are shared pro rata by time over the intervals [t0, t1) overlaps, as
for registers. Per interval, the signed sums are then cleaned of sensor noise:
``used_l = max(0, Σ used)`` and ``unexplained_drop_l = Σ drop if Σ drop > noise_l else 0``.
Like intervals, the result is a pure function of the sets of samples, so the stream can
recompute an affected range (:mod:`pipeline.derive.windowing`) of the level series.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from pipeline.derive.intervals import IntervalRules, compute_intervals_many
from pipeline.derive.pairs import dedup_readings, spread_pro_rata, sum_canonically

__all__ = ["FUEL_SCHEMA", "FuelResult", "fuel_intervals", "generator_intervals"]

FUEL_SCHEMA = {"interval_start_ms": pl.Int64, "used_l": pl.Float64, "refuel_l": pl.Float64,
               "unexplained_drop_l": pl.Float64, "n_readings": pl.UInt32}  # fmt: skip


@dataclass(frozen=True, slots=True)
class FuelResult:
    """``intervals``: keys + FUEL_SCHEMA; ``refuels``: keys + ts_ms, prev_ts_ms, level_before, level_after, litres."""

    intervals: pl.DataFrame
    refuels: pl.DataFrame


def _keyed(frame: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    return frame if keys != ["_sid"] or "_sid" in frame.columns else frame.with_columns(_sid=pl.lit("s"))


def fuel_intervals(
    levels: pl.DataFrame,
    states: pl.DataFrame,
    *,
    keys: Sequence[str] = (),
    interval_s: int = 900,
    refuel_min_l: float = 1.0,
    noise_l: float = 0.5,
    periods: pl.DataFrame | None = None,
    gap_factor: float = 2.0,
) -> FuelResult:
    """``levels``/``states``: keys + ``ts_ms``, ``value`` [+ ``seq``] (state: 1 running, 0 stopped);
    ``periods``: keys + ``expected_period_s`` (nullable; no row or null = no gap rule)."""
    keys = list(keys) or ["_sid"]
    ims = interval_s * 1000
    seq = ["seq"] if "seq" in levels.columns else []
    pts, _ = dedup_readings(_keyed(levels, keys).lazy(), keys, seq)
    st, _ = dedup_readings(_keyed(states, keys).lazy(), keys, ["seq"] if "seq" in states.columns else [])
    c = pl.col
    pairs = (pts.with_columns(t0=c("ts_ms").shift(1).over(keys), l0=c("value").shift(1).over(keys))
             .filter(c("t0").is_not_null()).rename({"ts_ms": "t1", "value": "l1"}).sort([*keys, "t1"])
             .join_asof(st.rename({"ts_ms": "_st", "value": "_state"}).sort([*keys, "_st"]), left_on="t1",
                        right_on="_st", by=keys, strategy="backward", check_sortedness=False)
             .with_columns(_rise=c("l1") - c("l0"), _run=c("_state").fill_null(0.0) > 0.5))  # fmt: skip
    if periods is not None and not periods.is_empty():
        st0 = st.rename({"ts_ms": "_st0", "value": "_state0"}).sort([*keys, "_st0"])
        per = _keyed(periods, keys).lazy().select(*keys, _p=c("expected_period_s").cast(pl.Float64))
        at_t0 = (pairs.sort([*keys, "t0"])
                 .join_asof(st0, left_on="t0", right_on="_st0", by=keys, strategy="backward", check_sortedness=False)
                 .join(per, on=keys, how="left"))  # fmt: skip
        gap = ((c("t1") - c("t0")) / 1000.0 > gap_factor * c("_p")).fill_null(False)
        pairs = at_t0.with_columns(_run=c("_run") | (gap & (c("_state0").fill_null(0.0) > 0.5)))
    refuel = c("_rise") > refuel_min_l
    pairs = pairs.with_columns(_refuel=pl.when(refuel).then(c("_rise")).otherwise(0.0),
                               _used=pl.when(~refuel & c("_run")).then(-c("_rise")).otherwise(0.0),
                               _drop=pl.when(~refuel & ~c("_run")).then(-c("_rise")).otherwise(0.0))  # fmt: skip
    spread, share = spread_pro_rata(pairs, ims)
    spread = spread.select(*keys, "_s", *(c(n) * share for n in ("_used", "_refuel", "_drop")), n=pl.lit(0, pl.UInt32))
    at = pts.select(*keys, _s=c("ts_ms") // ims * ims, _used=pl.lit(0.0), _refuel=pl.lit(0.0), _drop=pl.lit(0.0),
                    n=pl.lit(1, pl.UInt32))  # fmt: skip
    contrib = pl.concat([spread, at])
    refuels = pairs.filter(refuel).select(*keys, ts_ms="t1", prev_ts_ms="t0", level_before="l0", level_after="l1",
                                          litres="_rise").sort([*keys, "ts_ms"])  # fmt: skip
    contrib, refuels = pl.collect_all([contrib, refuels])
    intervals = (sum_canonically(contrib, [*keys, "_s"], ["_used", "_refuel", "_drop"], flags=False)
                 .select(*keys, interval_start_ms="_s", used_l=c("_used").clip(lower_bound=0.0), refuel_l="_refuel",
                         unexplained_drop_l=pl.when(c("_drop") > noise_l).then(c("_drop")).otherwise(0.0),
                         n_readings="n_readings"))  # fmt: skip
    if keys == ["_sid"]:
        intervals, refuels = intervals.drop("_sid"), refuels.drop("_sid")
    return FuelResult(intervals, refuels)


def generator_intervals(
    levels: pl.DataFrame,
    states: pl.DataFrame,
    runtime: pl.DataFrame,
    *,
    keys: Sequence[str] = (),
    runtime_params: pl.DataFrame | None = None,
    interval_s: int = 900,
    refuel_min_l: float = 1.0,
    noise_l: float = 0.5,
) -> FuelResult:
    """:func:`fuel_intervals` plus ``runtime_s`` / ``runtime_estimated_s`` per interval from the runtime
    register (``generator_runtime``, seconds) through the register rules; the cap is the elapsed time.

    ``runtime_params``: keys + ceiling, max_rate_per_s, expected_period_s (default: ceiling
    2^32 − 1, rate 1.0, no gap estimation); the expected period is the level's too (one
    reading carries all of a generator's channels), for the gap rule of :func:`fuel_intervals`.
    Intervals present in either series are returned.
    """
    keys_l = list(keys) or ["_sid"]
    periods = None if runtime_params is None else _keyed(runtime_params, keys_l).select(*keys_l, "expected_period_s")
    fuel = fuel_intervals(levels, states, keys=keys, interval_s=interval_s, refuel_min_l=refuel_min_l, noise_l=noise_l,
                          periods=periods)  # fmt: skip
    rt = _keyed(runtime, keys_l)
    if runtime_params is None:
        runtime_params = (
            rt.select(keys_l)
            .unique()
            .with_columns(
                ceiling=pl.lit(4294967295.0), max_rate_per_s=pl.lit(1.0), expected_period_s=pl.lit(None, pl.Float64)
            )
        )
    res = compute_intervals_many(rt, _keyed(runtime_params, keys_l), keys=keys_l,
                                 rules=IntervalRules(interval_s=interval_s))  # fmt: skip
    run = res.intervals.select(*keys_l, "interval_start_ms", runtime_s="measured", runtime_estimated_s="estimated")
    if keys_l == ["_sid"]:
        run = run.drop("_sid")
    on = [*(k for k in keys_l if k != "_sid"), "interval_start_ms"]
    out = fuel.intervals.join(run, on=on, how="full", coalesce=True).sort(on)
    zero = {n: pl.col(n).fill_null(0.0) for n in ("used_l", "refuel_l", "unexplained_drop_l", "runtime_s",
                                                   "runtime_estimated_s")}  # fmt: skip
    return FuelResult(out.with_columns(**zero, n_readings=pl.col("n_readings").fill_null(0)), fuel.refuels)
