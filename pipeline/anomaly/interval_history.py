"""The ``spike`` rule's memory of a device's recent 15-min intervals: a ring of the window's values per series.

Also the NaN-ignoring row median the rule computes its references with.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from pipeline.anomaly.numbering import SID
from pipeline.anomaly.series_state import SeriesIndex

__all__ = ["DAY_SLOTS", "IMS", "KEYS", "IntervalHistory", "row_median"]

IMS = 900_000  # interval length (ms) of the consumption the rule judges
DAY_SLOTS = 96  # intervals per day
KEYS = ["tenant_id", "device_id", "quantity"]  # a series (numbered SID; its site may change)
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
    once it has intervals, the window's interval values (float32) and numbers + 1 (int32, 0: none) in
    ring slots (``vals``/``stamp`` rows, ``slot[row]``; -1 while the series has none: series whose
    readings never complete an interval cost no ring). A value counts only where its slot's stamp
    says so, so new ring rows are left as the allocator gives them (zeroed pages, touched when
    written): growing the rings costs the copy of the old ones, not a fill of the new."""

    def __init__(self) -> None:
        self.slots = 8 * DAY_SLOTS
        self.vals = np.zeros((0, self.slots), dtype=np.float32)
        self.stamp = np.zeros((0, self.slots), dtype=np.int32)
        self.slot = np.zeros(0, np.int64)
        self._rings = 0
        super().__init__(SID)

    def _grow(self, extra: int) -> None:
        super()._grow(extra)
        self.slot = np.concatenate([self.slot, np.full(extra, -1, np.int64)])

    def rings(self, rows: np.ndarray) -> np.ndarray:
        """The ring rows of ``rows``, made for those without one."""
        new = np.unique(rows[self.slot[rows] < 0])
        if len(new):
            self.slot[new] = np.arange(self._rings, self._rings + len(new))
            self._rings += len(new)
            if self._rings > self.vals.shape[0]:  # grow by a quarter, as the other per-series arrays
                size = max(self._rings, self.vals.shape[0] + self.vals.shape[0] // 4, 64)
                self.vals, self.stamp = _grown(self.vals, size), _grown(self.stamp, size)
        return self.slot[rows]

    def ensure_slots(self, days: float) -> None:
        need = (math.ceil(days) + 1) * DAY_SLOTS
        if need <= self.slots:
            return
        vals = np.zeros((self.vals.shape[0], need), np.float32)
        stamp = np.zeros((self.vals.shape[0], need), np.int32)
        rows, cols = np.nonzero(self.stamp)
        n = self.stamp[rows, cols] - 1
        vals[rows, n % need], stamp[rows, n % need] = self.vals[rows, cols], n + 1
        self.vals, self.stamp, self.slots = vals, stamp, need

    def advance(self, seen: pl.DataFrame) -> pl.DataFrame:
        """Readings (SID, ts_ms, ``_i``: their positions in the batch) -> per series: SID, ``_row``, ``_i`` of
        its last reading in the batch, and the interval numbers ``lo <= n < hi`` completed by them (a new
        series: everything before its newest reading)."""
        per = self.assign(seen.group_by(SID).agg(pl.col("_i").last(), first=pl.col("ts_ms").min(),
                                                  top=pl.col("ts_ms").max()))  # fmt: skip
        rows = per["_row"].to_numpy()
        prev = self._last[rows]
        mark = np.maximum(prev, per["top"].to_numpy())
        self._last[rows] = mark
        lo = np.where(prev == _NONE, per["first"].to_numpy(), prev) // IMS
        return per.select(SID, "_row", "_i").with_columns(lo=pl.Series(lo), hi=pl.Series(mark // IMS))

    def take(self, rings: np.ndarray, n: np.ndarray) -> np.ndarray:
        """Values at interval numbers ``n`` (one row of numbers per ring row), NaN where not stored."""
        r = np.broadcast_to(rings[:, None], n.shape)
        ok = self.stamp[r, n % self.slots] == n + 1
        return np.where(ok, self.vals[r, n % self.slots], np.nan)

    def numbers(self, rings: np.ndarray) -> np.ndarray:
        """The interval number held in each slot of ring rows ``rings`` (-1: none)."""
        return self.stamp[rings] - 1

    def put(self, rings: np.ndarray, n: np.ndarray, x: np.ndarray) -> None:
        """Store values ``x`` (NaN: nothing usable) at interval numbers ``n`` of ring rows ``rings``."""
        self.vals[rings, n % self.slots] = x
        self.stamp[rings, n % self.slots] = np.where(np.isnan(x), 0, n + 1)


def _grown(a: np.ndarray, rows: int) -> np.ndarray:
    """``a`` with ``rows`` rows: the old ones copied, the new ones zero (left untouched: zero pages)."""
    out = np.zeros((rows, a.shape[1]), a.dtype)
    out[: a.shape[0]] = a
    return out
