"""Which intervals a batch of new readings can change, and which stored readings recompute them.

Intervals are a pure function of the set of readings of a series, and an interval
depends only on the reading pairs that overlap it. New readings N change the pairs
between the stored reading just before min(N) and the stored reading just after
max(N), nothing else. So the stream:

1. ``start, end = affected_range(new_ts, stored_ts)`` (interval-aligned);
2. ``ctx = window(all_readings, start, end)`` – the readings in [start, end) plus the
   last reading before ``start`` and the first at or after ``end`` (all rows at those
   timestamps, so duplicates and conflicts resolve the same way);
3. ``compute_intervals(ctx, ..., start_ms=start, end_ms=end)`` and overwrites those
   intervals (ReplacingMergeTree keyed by tenant, device, quantity, interval_start).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

import polars as pl

__all__ = ["affected_range", "affected_ranges", "window", "window_many"]


def affected_range(new_ts: Iterable[int], existing_ts: Iterable[int], interval_s: int = 900) -> tuple[int, int] | None:
    """[start, end) epoch ms, aligned to intervals, of the intervals that adding ``new_ts`` can change.

    From the interval holding the last existing reading before min(new) (or min(new)
    itself) to the end of the interval holding the first existing reading after
    max(new) (or max(new)). ``None`` if there is nothing new.
    """
    new = list(new_ts)
    if not new:
        return None
    ims = interval_s * 1000
    existing = sorted(set(existing_ts))
    lo, hi = min(new), max(new)
    i = bisect.bisect_left(existing, lo)
    j = bisect.bisect_right(existing, hi)
    before = existing[i - 1] if i > 0 else lo
    after = existing[j] if j < len(existing) else hi
    return before // ims * ims, after // ims * ims + ims


def affected_ranges(
    new: pl.DataFrame, existing: pl.DataFrame, keys: Sequence[str], interval_s: int = 900
) -> pl.DataFrame:
    """:func:`affected_range` per series: keys + ``start_ms``, ``end_ms`` for every series in ``new``."""
    keys = list(keys)
    ims = interval_s * 1000
    span = new.group_by(keys).agg(_lo=pl.col("ts_ms").min(), _hi=pl.col("ts_ms").max())
    ex = existing.select(*keys, "ts_ms").join(span, on=keys)
    before = ex.filter(pl.col("ts_ms") < pl.col("_lo")).group_by(keys).agg(_b=pl.col("ts_ms").max())
    after = ex.filter(pl.col("ts_ms") > pl.col("_hi")).group_by(keys).agg(_a=pl.col("ts_ms").min())
    out = span.join(before, on=keys, how="left").join(after, on=keys, how="left")
    return out.select(*keys, start_ms=pl.coalesce("_b", "_lo") // ims * ims,
                      end_ms=pl.coalesce("_a", "_hi") // ims * ims + ims).sort(keys)  # fmt: skip


def window(readings: pl.DataFrame, start_ms: int, end_ms: int) -> pl.DataFrame:
    """Readings of one series needed to recompute intervals in [start_ms, end_ms)."""
    ts = pl.col("ts_ms")
    prev = readings.filter(ts < start_ms)["ts_ms"].max()
    nxt = readings.filter(ts >= end_ms)["ts_ms"].min()
    lo = prev if prev is not None else start_ms
    hi = nxt if nxt is not None else end_ms - 1
    return readings.filter((ts >= lo) & (ts <= hi))


def window_many(readings: pl.DataFrame, ranges: pl.DataFrame, keys: Sequence[str]) -> pl.DataFrame:
    """:func:`window` per series; ``ranges`` = keys + ``start_ms``, ``end_ms`` (one row per series)."""
    keys = list(keys)
    ts = pl.col("ts_ms")
    r = readings.join(ranges.select(*keys, "start_ms", "end_ms"), on=keys)
    prev = r.filter(ts < pl.col("start_ms")).group_by(keys).agg(_p=ts.max())
    nxt = r.filter(ts >= pl.col("end_ms")).group_by(keys).agg(_n=ts.min())
    r = r.join(prev, on=keys, how="left").join(nxt, on=keys, how="left")
    keep = (ts >= pl.coalesce("_p", "start_ms")) & (ts <= pl.coalesce("_n", pl.col("end_ms") - 1))
    return r.filter(keep).drop("start_ms", "end_ms", "_p", "_n")
