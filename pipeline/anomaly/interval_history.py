"""The ``spike`` rule's memory of a device's recent 15-min intervals: a ring of the window's values per series.

Also the NaN-ignoring row median the rule computes its references with.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from pipeline.anomaly.numbering import SID
from pipeline.anomaly.series_state import SeriesIndex, series_order

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
    ring slots (``vals``/``stamp`` columns, ``slot[row]``; -1 while the series has none: series whose
    readings never complete an interval cost no ring). Slots are rows: the intervals of one 15 minutes
    of every series are adjacent, so storing them touches a few pages, not one page per series (with
    10,000 meters, page faults made the first interval of a fleet cost 60 ms). A value counts only
    where its slot's stamp says so: new memory is left as the allocator gives it (zeroed pages)."""

    def __init__(self) -> None:
        self.slots = 8 * DAY_SLOTS
        self.vals = np.zeros((self.slots, 0), dtype=np.float32)
        self.stamp = np.zeros((self.slots, 0), dtype=np.int32)
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
            if self._rings > self.vals.shape[1]:  # grow by a quarter, as the other per-series arrays
                size = max(self._rings, self.vals.shape[1] + self.vals.shape[1] // 4, 64)
                self.vals, self.stamp = _grown(self.vals, size), _grown(self.stamp, size)
        return self.slot[rows]

    def ensure_slots(self, days: float) -> None:
        need = (math.ceil(days) + 1) * DAY_SLOTS
        if need <= self.slots:
            return
        vals = np.zeros((need, self.vals.shape[1]), np.float32)
        stamp = np.zeros((need, self.vals.shape[1]), np.int32)
        slots, rings = np.nonzero(self.stamp)
        n = self.stamp[slots, rings] - 1
        vals[n % need, rings], stamp[n % need, rings] = self.vals[slots, rings], n + 1
        self.vals, self.stamp, self.slots = vals, stamp, need

    def advance(self, ids: np.ndarray, ts: np.ndarray, at: np.ndarray) -> pl.DataFrame:
        """Readings (series numbers, times, positions in the batch) -> per series: SID, ``_row``, ``_i`` (the
        position of its newest reading), and the interval numbers ``lo <= n < hi`` completed by them (a new
        series: everything before its newest reading)."""
        rows = self.rows(ids)
        order = series_order(rows, ts)
        rows, ts = rows[order], ts[order]
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        ends = np.r_[starts[1:], len(rows)] - 1
        row = rows[starts]
        prev = self._last[row]
        mark = np.maximum(prev, ts[ends])
        self._last[row] = mark
        lo = np.where(prev == _NONE, ts[starts], prev) // IMS
        return pl.DataFrame({SID: ids[order[starts]], "_row": row, "_i": at[order[ends]], "lo": lo, "hi": mark // IMS})

    def take(self, rings: np.ndarray, n: np.ndarray) -> np.ndarray:
        """Values at interval numbers ``n`` (one row of numbers per ring row), NaN where not stored."""
        r = np.broadcast_to(rings[:, None], n.shape)
        ok = self.stamp[n % self.slots, r] == n + 1
        return np.where(ok, self.vals[n % self.slots, r], np.nan)

    def numbers(self, rings: np.ndarray) -> np.ndarray:
        """The interval number held in each slot of rings ``rings`` (one row per ring; -1: none)."""
        return self.stamp[:, rings].T - 1

    def values(self, rings: np.ndarray) -> np.ndarray:
        """The value held in each slot of rings ``rings`` (one row per ring; see :meth:`numbers`)."""
        return self.vals[:, rings].T

    def put(self, rings: np.ndarray, n: np.ndarray, x: np.ndarray) -> None:
        """Store values ``x`` (NaN: nothing usable) at interval numbers ``n`` of rings ``rings``."""
        self.vals[n % self.slots, rings] = x
        self.stamp[n % self.slots, rings] = np.where(np.isnan(x), 0, n + 1)


def _grown(a: np.ndarray, rings: int) -> np.ndarray:
    """``a`` with ``rings`` columns: the old ones copied, the new ones zero (left untouched: zero pages)."""
    out = np.zeros((a.shape[0], rings), a.dtype)
    out[:, : a.shape[1]] = a
    return out
