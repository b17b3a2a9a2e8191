"""Interval consumption from cumulative registers: a pure function of a set of readings.

For one device and cumulative quantity (or many at once, keyed by ``keys``), the
readings are de-duplicated, sorted by timestamp and taken pairwise; every pair
(E0 at t0, E1 at t1) is classified by the rules of ``domain/meters.md``:

* Δ = E1 − E0 ≥ 0: counted, unless Δ > cap = max_rate_per_s × (t1 − t0) → ``IMPLAUSIBLE_JUMP``, 0;
* Δ < 0, E0 ≥ hi·E_max, E1 ≤ lo·E_max and (E_max − E0) + E1 ≤ cap → ``ROLLOVER``, that is counted;
* Δ < 0 otherwise → ``RESET``: 0 counted (or E1 with ``reset_counts_value``: Prometheus
  ``increase()`` semantics, the register restarted from 0), a new segment starts at E1;
* a registry replacement (old_final, new_first, at) with t0 < at ≤ t1 → ``RESET``, and
  (old_final − E0) + (E1 − new_first) counted (each part ≥ 0; several swaps chain);
* t1 − t0 > gap_factor × expected period → the counted Δ goes to ``estimated``, not
  ``measured``, flag ``ESTIMATED``.

A pair's counted Δ is shared pro rata by time over the intervals [t0, t1) overlaps; the
pair's flags go to every one of them. Same timestamp and value → ignored; same
timestamp, different value → the first in order wins and the interval is flagged
``CONFLICT``. "Order" is ``seq`` (source offset) if the frame has it, then row order
(= arrival order): so the result depends only on the set of (ts, value, seq).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import polars as pl

from pipeline.derive.pairs import dedup_readings, readings_frame, spread_pro_rata, sum_canonically
from pipeline.derive.registers import Replacement
from pipeline.flags import Flag

__all__ = [
    "EVENT_SCHEMA",
    "INTERVAL_SCHEMA",
    "IntervalResult",
    "IntervalRules",
    "compute_intervals",
    "compute_intervals_many",
    "readings_frame",
]

INTERVAL_SCHEMA = {"interval_start_ms": pl.Int64, "measured": pl.Float64, "estimated": pl.Float64,
                   "flags": pl.UInt32, "n_readings": pl.UInt32}  # fmt: skip
EVENT_SCHEMA = {"kind": pl.Utf8, "ts_ms": pl.Int64, "prev_ts_ms": pl.Int64, "prev_value": pl.Float64,
                "value": pl.Float64, "delta": pl.Float64, "cap": pl.Float64}  # fmt: skip
_EVENT_KINDS = ("rollover", "reset", "replacement", "implausible_jump", "gap")


@dataclass(frozen=True, slots=True)
class IntervalRules:
    """Settings shared by all series (meters.md conventions)."""

    interval_s: int = 900
    rollover_hi: float = 0.9
    rollover_lo: float = 0.1
    gap_factor: float = 2.0
    reset_counts_value: bool = False


@dataclass(frozen=True, slots=True)
class IntervalResult:
    """``intervals``: keys + INTERVAL_SCHEMA, sorted; ``events``: keys + EVENT_SCHEMA, sorted by ts, kind."""

    intervals: pl.DataFrame
    events: pl.DataFrame


def _c(name: str) -> pl.Expr:
    return pl.col(name)


def _replacement_deltas(pairs: pl.LazyFrame, repl: pl.LazyFrame, keys: list[str]) -> pl.LazyFrame:
    pk = [*keys, "t1"]
    j = (pairs.select(*pk, "t0", "v0", "v1").join(repl.select(*keys, "at_ms", "old_final", "new_first"), on=keys)
         .filter((_c("at_ms") > _c("t0")) & (_c("at_ms") <= _c("t1"))).sort([*pk, "at_ms"])
         .with_columns(_prev=_c("new_first").shift(1).over(pk)))  # fmt: skip
    j = j.with_columns(_part=(_c("old_final") - pl.coalesce("_prev", "v0")).clip(lower_bound=0.0))
    tail = (_c("v1").last() - _c("new_first").last()).clip(lower_bound=0.0)
    return j.group_by(pk).agg((_c("_part").sum() + tail).alias("_repl"))


def _classify(pairs: pl.LazyFrame, rules: IntervalRules) -> pl.LazyFrame:
    ceil, v0, v1 = _c("ceiling"), _c("v0"), _c("v1")
    dt_s = (_c("t1") - _c("t0")) / 1000.0
    pairs = pairs.with_columns(cap=_c("max_rate_per_s") * dt_s, _raw=v1 - v0, _roll_d=ceil - v0 + v1,
                               _repl_p=_c("_repl").is_not_null())  # fmt: skip
    cap, raw, repl = _c("cap"), _c("_raw"), _c("_repl_p")
    pairs = pairs.with_columns(
        rollover=(~repl & (raw < 0) & ceil.is_not_null() & (v0 >= rules.rollover_hi * ceil)
                  & (v1 <= rules.rollover_lo * ceil) & (cap.is_null() | (_c("_roll_d") <= cap))).fill_null(False),
        gap=(_c("expected_period_s").is_not_null() & (dt_s > rules.gap_factor * _c("expected_period_s"))
             ).fill_null(False),
    ).with_columns(reset=~repl & (raw < 0) & ~_c("rollover"))  # fmt: skip
    after_reset = v1 if rules.reset_counts_value else pl.lit(0.0)
    pairs = pairs.with_columns(
        delta=pl.when(repl)
        .then(_c("_repl"))
        .when(_c("rollover"))
        .then(_c("_roll_d"))
        .when(_c("reset"))
        .then(after_reset)
        .otherwise(raw)
    ).with_columns(_over=(cap.is_not_null() & (_c("delta") > cap)).fill_null(False))
    pairs = pairs.with_columns(implausible_jump=_c("_over") & ~_c("reset"), replacement=repl,
                               counted=pl.when(_c("_over")).then(0.0).otherwise(_c("delta")))  # fmt: skip
    bits = [(Flag.ROLLOVER, "rollover"), (Flag.RESET, "reset"), (Flag.RESET, "replacement"),
            (Flag.IMPLAUSIBLE_JUMP, "implausible_jump"), (Flag.ESTIMATED, "gap")]  # fmt: skip
    flags = pl.sum_horizontal([pl.when(_c(n)).then(int(f)).otherwise(0) for f, n in bits]).cast(pl.UInt32)
    # a replacement is flagged RESET once, not twice
    flags = flags - pl.when(_c("reset") & _c("replacement")).then(int(Flag.RESET)).otherwise(0).cast(pl.UInt32)
    return pairs.with_columns(flags=flags)


def compute_intervals_many(
    readings: pl.DataFrame,
    params: pl.DataFrame | None = None,
    *,
    keys: Sequence[str] = ("tenant_id", "device_id", "quantity"),
    replacements: pl.DataFrame | None = None,
    ranges: pl.DataFrame | None = None,
    rules: IntervalRules = IntervalRules(),
) -> IntervalResult:
    """Intervals of many series at once.

    ``readings``: keys + ``ts_ms`` (Int64 epoch ms) + ``value`` (Float64) [+ ``seq`` (Int64)].
    ``params``: keys + ``ceiling``, ``max_rate_per_s``, ``expected_period_s`` (nullable floats;
    a series without a row gets no rollover, no cap, no gaps). ``replacements``: keys +
    ``at_ms``, ``old_final``, ``new_first``. ``ranges``: keys + ``start_ms``, ``end_ms``: only
    intervals starting in [start_ms, end_ms) and events with ts in it are returned (and only
    for series listed). Intervals cover floor(first ts) … floor(last ts) of each series.
    """
    keys = list(keys)
    ims = rules.interval_s * 1000
    seq = ["seq"] if "seq" in readings.columns else []
    points, conflicts = dedup_readings(readings.lazy(), keys, seq)
    if params is None:
        params = pl.DataFrame(schema={**{k: readings.schema[k] for k in keys}, "ceiling": pl.Float64,
                                      "max_rate_per_s": pl.Float64, "expected_period_s": pl.Float64})  # fmt: skip
    pairs = (points.with_columns(t0=_c("ts_ms").shift(1).over(keys), v0=_c("value").shift(1).over(keys))
             .filter(_c("t0").is_not_null()).rename({"ts_ms": "t1", "value": "v1"})
             .join(params.lazy().select(*keys, *(_c(c).cast(pl.Float64) for c in ("ceiling", "max_rate_per_s",
                                                                            "expected_period_s"))),
                   on=keys, how="left"))  # fmt: skip
    if replacements is not None and not replacements.is_empty():
        pairs = pairs.join(_replacement_deltas(pairs, replacements.lazy(), keys), on=[*keys, "t1"], how="left")
    else:
        pairs = pairs.with_columns(_repl=pl.lit(None, dtype=pl.Float64))
    pairs = _classify(pairs, rules)
    spread, share = spread_pro_rata(pairs, ims)
    spread = spread.select(*keys, "_s", measured=pl.when(_c("gap")).then(0.0).otherwise(_c("counted")) * share,
                           estimated=pl.when(_c("gap")).then(_c("counted")).otherwise(0.0) * share,
                           flags=_c("flags"), n=pl.lit(0, dtype=pl.UInt32))  # fmt: skip
    conflict_ts = conflicts.select(*keys, "ts_ms", _cf=pl.lit(int(Flag.CONFLICT), dtype=pl.UInt32))
    at_points = (points.join(conflict_ts, on=[*keys, "ts_ms"], how="left")
                 .select(*keys, _s=_c("ts_ms") // ims * ims, measured=pl.lit(0.0), estimated=pl.lit(0.0),
                         flags=_c("_cf").fill_null(0), n=pl.lit(1, dtype=pl.UInt32)))  # fmt: skip
    contrib, events = pl.collect_all([pl.concat([spread, at_points]), _events(pairs, conflicts, keys)])
    intervals = sum_canonically(contrib, [*keys, "_s"], ["measured", "estimated"], flags=True).rename(
        {"_s": "interval_start_ms"}
    )
    if ranges is not None:
        rng = ranges.select(*keys, _c("start_ms").cast(pl.Int64), _c("end_ms").cast(pl.Int64))
        inside = (pl.col("_t") >= _c("start_ms")) & (pl.col("_t") < _c("end_ms"))
        intervals = (intervals.join(rng, on=keys).with_columns(_t=_c("interval_start_ms")).filter(inside)
                     .drop("_t", "start_ms", "end_ms").sort([*keys, "interval_start_ms"]))  # fmt: skip
        events = (events.join(rng, on=keys).with_columns(_t=_c("ts_ms")).filter(inside)
                  .drop("_t", "start_ms", "end_ms").sort([*keys, "ts_ms", "kind"]))  # fmt: skip
    return IntervalResult(intervals, events)


def _events(pairs: pl.LazyFrame, conflicts: pl.LazyFrame, keys: list[str]) -> pl.LazyFrame:
    cols = [*keys, _c("t1").alias("ts_ms"), _c("t0").alias("prev_ts_ms"), _c("v0").alias("prev_value"),
            _c("v1").alias("value")]  # fmt: skip
    parts = [pairs.filter(_c(kind)).select(pl.lit(kind).alias("kind"), *cols,
                                           (_c("counted") if kind == "gap" else _c("delta")).alias("delta"), "cap")
             for kind in _EVENT_KINDS]  # fmt: skip
    parts.append(conflicts.select(pl.lit("conflict").alias("kind"), *keys, "ts_ms",
                                  pl.lit(None, dtype=pl.Int64).alias("prev_ts_ms"),
                                  pl.lit(None, dtype=pl.Float64).alias("prev_value"), "value", "delta",
                                  pl.lit(None, dtype=pl.Float64).alias("cap")))  # fmt: skip
    return pl.concat(parts).sort([*keys, "ts_ms", "kind"])


def compute_intervals(
    series: pl.DataFrame | Iterable[Sequence[float]],
    *,
    ceiling: float | None,
    rated_power_w: float | None = None,
    max_rate_per_s: float | None = None,
    expected_period_s: float | None = None,
    replacements: Iterable[Replacement] = (),
    interval_s: int = 900,
    rollover_hi: float = 0.9,
    rollover_lo: float = 0.1,
    gap_factor: float = 2.0,
    reset_counts_value: bool = False,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> IntervalResult:
    """Intervals of one device + cumulative quantity (see the module doc for the rules).

    ``series``: readings in arrival order, ``(ts_ms, value[, seq])``. The cap is
    ``max_rate_per_s`` if given, else ``rated_power_w / 3600`` (a Wh register), else none.
    ``start_ms``/``end_ms`` restrict the output to intervals starting in [start_ms, end_ms)
    (pass the context readings, see :func:`pipeline.derive.windowing.window`).
    """
    df = readings_frame(series).with_columns(_sid=pl.lit("s"))
    rate = max_rate_per_s if max_rate_per_s is not None else (rated_power_w / 3600.0 if rated_power_w else None)
    params = pl.DataFrame({"_sid": ["s"], "ceiling": [ceiling], "max_rate_per_s": [rate],
                           "expected_period_s": [expected_period_s]},
                          schema={"_sid": pl.Utf8, "ceiling": pl.Float64, "max_rate_per_s": pl.Float64,
                                  "expected_period_s": pl.Float64})  # fmt: skip
    repl = pl.DataFrame(
        [("s", r.at_ms, r.old_final, r.new_first) for r in replacements],
        orient="row",
        schema={"_sid": pl.Utf8, "at_ms": pl.Int64, "old_final": pl.Float64, "new_first": pl.Float64},
    )
    ranges = None
    if start_ms is not None or end_ms is not None:
        lo, hi = start_ms if start_ms is not None else -(2**62), end_ms if end_ms is not None else 2**62
        ranges = pl.DataFrame({"_sid": ["s"], "start_ms": [lo], "end_ms": [hi]})
    rules = IntervalRules(interval_s, rollover_hi, rollover_lo, gap_factor, reset_counts_value)
    res = compute_intervals_many(df, params, keys=["_sid"], replacements=repl, ranges=ranges, rules=rules)
    return IntervalResult(res.intervals.drop("_sid"), res.events.drop("_sid"))
