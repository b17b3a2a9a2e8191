"""The ``spike`` rule's memory of a device's recent 15-min intervals: a ring of the window's values per series.

Also the NaN-ignoring row median the rule computes its references with.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from pipeline.anomaly.meter_state import SeriesIndex

__all__ = ["DAY_SLOTS", "IMS", "KEYS", "IntervalHistory", "row_median"]

IMS = 900_000  # interval length (ms) of the consumption the rule judges
DAY_SLOTS = 96  # intervals per day
KEYS = ["tenant_id", "device_id", "quantity"]  # a series (its site may change)
_NONE = np.iinfo(np.int64).min


def row_median(a: np.ndarray) -> np.ndarray:
    """Row medians ignoring NaN (NaN for a row without values), without numpy's all-NaN warnings."""
    if a.shape[1] == 0:
        return np.full(a.shape[0], np.nan)
    n = np.count_nonzero(~np.isnan(a), axis=1)
    s = np.sort(a, axis=1)  # NaN last
    lo = np.take_along_axis(s, (np.maximum(n - 1, 0) // 2)[:, None], axis=1)[:, 0]
    hi = np.take_along_axis(s, np.minimum(n // 2, a.shape[1] - 1)[:, None], axis=1)[:, 0]
    return np.where(n > 0, (lo + hi) / 2, np.nan)


class IntervalHistory(SeriesIndex):
    """Per series: the newest reading time seen (``_last``, the watermark of completed intervals) and,
    once it has intervals, the window's interval values (float32) and numbers (int32, -1: none) in
    ring slots (``vals``/``stamp`` rows, ``slot[row]``; -1 while the series has none: series whose
    readings never complete an interval cost no ring)."""

    def __init__(self) -> None:
        self.slots = 8 * DAY_SLOTS
        self.vals = np.full((0, self.slots), np.nan, dtype=np.float32)
        self.stamp = np.full((0, self.slots), -1, dtype=np.int32)
        self.slot = np.zeros(0, np.int64)
        self._used = 0
        super().__init__(KEYS)

    def _grow(self, extra: int) -> None:
        super()._grow(extra)
        self.slot = np.concatenate([self.slot, np.full(extra, -1, np.int64)])

    def rings(self, rows: np.ndarray) -> np.ndarray:
        """The ring rows of ``rows``, made for those without one."""
        new = np.unique(rows[self.slot[rows] < 0])
        if len(new):
            self.slot[new] = np.arange(self._used, self._used + len(new))
            self._used += len(new)
            if self._used > self.vals.shape[0]:  # grow by doubling: amortised O(1) per series
                extra = max(self._used, 2 * self.vals.shape[0], 64) - self.vals.shape[0]
                self.vals = np.vstack([self.vals, np.full((extra, self.slots), np.nan, np.float32)])
                self.stamp = np.vstack([self.stamp, np.full((extra, self.slots), -1, np.int32)])
        return self.slot[rows]

    def ensure_slots(self, days: float) -> None:
        need = (math.ceil(days) + 1) * DAY_SLOTS
        if need <= self.slots:
            return
        vals = np.full((self.vals.shape[0], need), np.nan, np.float32)
        stamp = np.full((self.vals.shape[0], need), -1, np.int32)
        rows, cols = np.nonzero(self.stamp >= 0)
        n = self.stamp[rows, cols]
        vals[rows, n % need], stamp[rows, n % need] = self.vals[rows, cols], n
        self.vals, self.stamp, self.slots = vals, stamp, need

    def advance(self, seen: pl.DataFrame) -> pl.DataFrame:
        """Readings (keys, site_id, ts_ms) -> per series: site_id, ``_row``, and the interval numbers
        ``lo <= n < hi`` completed by them (a new series: everything before its newest reading)."""
        per = self.assign(seen.group_by(KEYS).agg(pl.col("site_id").last(), first=pl.col("ts_ms").min(),
                                                   top=pl.col("ts_ms").max()))  # fmt: skip
        rows = per["_row"].to_numpy()
        prev = self._last[rows]
        mark = np.maximum(prev, per["top"].to_numpy())
        self._last[rows] = mark
        lo = np.where(prev == _NONE, per["first"].to_numpy(), prev) // IMS
        return per.select(*KEYS, "site_id", "_row").with_columns(lo=pl.Series(lo), hi=pl.Series(mark // IMS))

    def take(self, rings: np.ndarray, n: np.ndarray) -> np.ndarray:
        """Values at interval numbers ``n`` (one row of numbers per ring row), NaN where not stored."""
        r = np.broadcast_to(rings[:, None], n.shape)
        ok = self.stamp[r, n % self.slots] == n
        return np.where(ok, self.vals[r, n % self.slots], np.nan)
