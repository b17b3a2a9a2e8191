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

from pipeline.derive.pairs import ENGINE, dedup_points, readings_frame, same_as_previous, spread_pro_rata, sum_in_order
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
    # No quotients here: polars divides by a constant divisor as a product with its reciprocal,
    # except when the frame has a single row, so a quotient's last bit would depend on the batch.
    # Times stay in ms and caps are compared ×1000 (``_cap_ms``); products round the same everywhere.
    dt_ms = (_c("t1") - _c("t0")).cast(pl.Float64)
    pairs = pairs.with_columns(_cap_ms=_c("max_rate_per_s") * dt_ms, _raw=v1 - v0, _roll_d=ceil - v0 + v1,
                               _repl_p=_c("_repl").is_not_null()).with_columns(cap=_c("_cap_ms") * 0.001)  # fmt: skip
    cap_ms, raw, repl = _c("_cap_ms"), _c("_raw"), _c("_repl_p")
    pairs = pairs.with_columns(
        rollover=(~repl & (raw < 0) & ceil.is_not_null() & (v0 >= rules.rollover_hi * ceil)
                  & (v1 <= rules.rollover_lo * ceil) & (cap_ms.is_null() | (_c("_roll_d") * 1000.0 <= cap_ms))
                  ).fill_null(False),
        gap=(_c("expected_period_s").is_not_null() & (dt_ms > rules.gap_factor * 1000.0 * _c("expected_period_s"))
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
    ).with_columns(_over=(cap_ms.is_not_null() & (_c("delta") * 1000.0 > cap_ms)).fill_null(False))
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
    seeds: pl.DataFrame | None = None,
) -> IntervalResult:
    """Intervals of many series at once.

    ``readings``: keys + ``ts_ms`` (Int64 epoch ms) + ``value`` (Float64) [+ ``seq`` (Int64)].
    ``params``: keys + ``ceiling``, ``max_rate_per_s``, ``expected_period_s`` (nullable floats;
    a series without a row gets no rollover, no cap, no gaps). ``replacements``: keys +
    ``at_ms``, ``old_final``, ``new_first``. ``ranges``: keys + ``start_ms``, ``end_ms``: only
    intervals starting in [start_ms, end_ms) and events with ts in it are returned (and only
    for series listed). Intervals cover floor(first ts) … floor(last ts) of each series.

    An interval's sums add its contributions in time order (pairs by end time), so they can be
    continued: ``seeds`` (keys + ``interval_start_ms``, ``measured``, ``estimated``, ``flags``,
    ``n_readings``) are running totals of readings *not* given, added first to their interval.
    Intervals of the given readings plus a seed equal those of all readings bit for bit when the
    seed holds every contribution ending at or before the series' first given reading except
    that reading's own count (what the stream's in-order path passes, see
    :mod:`pipeline.worker.derive`).
    """
    keys = list(keys)
    ims = rules.interval_s * 1000
    seq = ["seq"] if "seq" in readings.columns else []
    points, conflicts = dedup_points(readings, keys, seq)  # points sorted by keys, ts
    if params is None:
        params = pl.DataFrame(schema={**{k: readings.schema[k] for k in keys}, "ceiling": pl.Float64,
                                      "max_rate_per_s": pl.Float64, "expected_period_s": pl.Float64})  # fmt: skip
    same = same_as_previous(keys)
    pairs = (points.lazy().with_columns(t0=pl.when(same).then(_c("ts_ms").shift(1)),
                                        v0=pl.when(same).then(_c("value").shift(1)))
             .filter(_c("t0").is_not_null()).rename({"ts_ms": "t1", "value": "v1"})
             .join(params.lazy().select(*keys, *(_c(c).cast(pl.Float64) for c in ("ceiling", "max_rate_per_s",
                                                                            "expected_period_s"))),
                   on=keys, how="left", maintain_order="left"))  # fmt: skip
    if replacements is not None and not replacements.is_empty():
        pairs = pairs.join(_replacement_deltas(pairs, replacements.lazy(), keys), on=[*keys, "t1"], how="left",
                           maintain_order="left")  # fmt: skip
    else:
        pairs = pairs.with_columns(_repl=pl.lit(None, dtype=pl.Float64))
    pairs = _classify(pairs, rules).collect(engine=ENGINE)  # in (keys, t1) order; used twice below: computed once
    spread, share = spread_pro_rata(pairs.lazy(), ims)
    contrib = [spread.select(*keys, "_s",
                             measured=pl.when(_c("gap")).then(0.0).otherwise(_c("counted")) * share,
                             estimated=pl.when(_c("gap")).then(_c("counted")).otherwise(0.0) * share,
                             flags=_c("flags"), n=pl.lit(0, dtype=pl.UInt32))]  # fmt: skip
    if seeds is not None and not seeds.is_empty():  # running totals: the first contribution of their interval
        totals = [_c("measured").cast(pl.Float64), _c("estimated").cast(pl.Float64), _c("flags").cast(pl.UInt32)]
        contrib.insert(0, seeds.lazy().select(*keys, _c("interval_start_ms").cast(pl.Int64).alias("_s"), *totals,
                                              _c("n_readings").cast(pl.UInt32).alias("n")))  # fmt: skip
    # within an interval: the seed, then the pairs by end time (the rows' order: pairs sorted, explode keeps it)
    sums = sum_in_order(pl.concat(contrib), [*keys, "_s"], ["measured", "estimated"])
    interval = {"_s": _c("ts_ms") // ims * ims}
    counts = points.lazy().group_by(*keys, **interval).agg(n=pl.len().cast(pl.UInt32), _cf=pl.lit(0, pl.UInt32))
    if not conflicts.is_empty():
        flagged = conflicts.lazy().select(*keys, **interval, _f=pl.lit(int(Flag.CONFLICT), pl.UInt32)).unique()
        counts = (counts.join(flagged, on=[*keys, "_s"], how="left")
                  .with_columns(_cf=_c("_cf") | _c("_f").fill_null(0)).drop("_f"))  # fmt: skip
    intervals = (sums.lazy().join(counts, on=[*keys, "_s"], how="full", coalesce=True)
                 .select(*keys, interval_start_ms="_s", measured=_c("measured").fill_null(0.0),
                         estimated=_c("estimated").fill_null(0.0),
                         flags=_c("flags").fill_null(0) | _c("_cf").fill_null(0),
                         n_readings=_c("n_readings").fill_null(0) + _c("n").fill_null(0)))  # fmt: skip
    events = _events(pairs.lazy(), conflicts.lazy(), keys)
    if ranges is not None:
        rng = ranges.lazy().select(*keys, _c("start_ms").cast(pl.Int64), _c("end_ms").cast(pl.Int64))
        intervals = _inside(intervals.join(rng, on=keys), "interval_start_ms")
        events = _inside(events.join(rng, on=keys), "ts_ms")
    intervals, events = pl.collect_all([intervals.sort([*keys, "interval_start_ms"]),
                                        events.sort([*keys, "ts_ms", "kind"])], engine=ENGINE)  # fmt: skip
    return IntervalResult(intervals, events)


def _inside(frame: pl.LazyFrame, ts: str) -> pl.LazyFrame:
    return frame.filter((_c(ts) >= _c("start_ms")) & (_c(ts) < _c("end_ms"))).drop("start_ms", "end_ms")


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
