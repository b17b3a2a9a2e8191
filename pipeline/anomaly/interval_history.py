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
    once it has intervals, the window's interval values in a ring of slots (``slot[row]`` its ring;
    -1 while the series has none: series whose readings never complete an interval cost no ring).

    A slot holds a value (float32) and its lap (int16: interval number // slots + 1; 0: none), so an
    interval number n counts only where slot n % slots holds lap n // slots + 1: 6 bytes a slot,
    4.6 KB per series for 8 days (laps fit int16 up to interval 32,766 × slots: the year 2688 with
    8-day rings; validation refuses readings from that far ahead long before).

    Rings live in blocks of ``block`` rings, one (slots × block) array pair each, slot-major: the
    intervals of one 15 minutes of a block's series are adjacent, so storing them touches a few
    pages, not one page per series (with 10,000 meters, page faults made the first interval of a
    fleet cost 60 ms). New blocks are left as the allocator gives them (zero pages, paid for as
    they are written) and a new series never copies the others: growing one array by copying held
    the old and the new array at once, 1.3 GB at 100,000 meters."""

    def __init__(self, block: int = 1 << 14) -> None:
        self.slots = 8 * DAY_SLOTS
        self.block = block
        self.vals: list[np.ndarray] = []  # per block: (slots, block) float32
        self.laps: list[np.ndarray] = []  # per block: (slots, block) int16
        self.slot = np.zeros(0, np.int64)
        self._rings = 0
        super().__init__(SID)

    def _grow(self, extra: int) -> None:
        super()._grow(extra)
        self.slot = np.concatenate([self.slot, np.full(extra, -1, np.int64)])

    def rings(self, rows: np.ndarray) -> np.ndarray:
        """The ring numbers of ``rows``, made for those without one."""
        new = np.unique(rows[self.slot[rows] < 0])
        if len(new):
            self.slot[new] = np.arange(self._rings, self._rings + len(new))
            self._rings += len(new)
            while len(self.vals) * self.block < self._rings:
                self.vals.append(np.zeros((self.slots, self.block), np.float32))
                self.laps.append(np.zeros((self.slots, self.block), np.int16))
        return self.slot[rows]

    def _blocks(self, rings: np.ndarray) -> list[tuple[int, np.ndarray | slice, np.ndarray]]:
        """(block, positions in ``rings``, columns in the block) of each block ``rings`` reach."""
        if len(self.vals) == 1:
            return [(0, slice(None), rings)]
        blk, col = np.divmod(rings, self.block)
        return [(b, at, col[at]) for b in range(len(self.vals)) if len(at := np.flatnonzero(blk == b))]

    def ensure_slots(self, days: float) -> None:
        need = (math.ceil(days) + 1) * DAY_SLOTS
        if need <= self.slots:
            return
        for b, (vals, laps) in enumerate(zip(self.vals, self.laps, strict=True)):
            s, r = np.nonzero(laps)
            n = (laps[s, r].astype(np.int64) - 1) * self.slots + s
            self.vals[b] = np.zeros((need, self.block), np.float32)
            self.laps[b] = np.zeros((need, self.block), np.int16)
            self.vals[b][n % need, r], self.laps[b][n % need, r] = vals[s, r], n // need + 1
        self.slots = need

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
        """Values at interval numbers ``n`` (one row of numbers per ring), NaN where not stored."""
        out = np.full(n.shape, np.nan, np.float32)
        lap, s = np.divmod(n, self.slots)
        for b, at, col in self._blocks(rings):
            c = np.broadcast_to(col[:, None], n[at].shape)
            ok = self.laps[b][s[at], c] == lap[at] + 1
            out[at] = np.where(ok, self.vals[b][s[at], c], np.nan)
        return out

    def numbers(self, rings: np.ndarray) -> np.ndarray:
        """The interval number held in each slot of rings ``rings`` (one row per ring; -1: none)."""
        out = np.full((len(rings), self.slots), -1, np.int64)
        for b, at, col in self._blocks(rings):
            laps = self.laps[b][:, col].T.astype(np.int64)
            out[at] = np.where(laps > 0, (laps - 1) * self.slots + np.arange(self.slots), -1)
        return out

    def values(self, rings: np.ndarray) -> np.ndarray:
        """The value held in each slot of rings ``rings`` (one row per ring; see :meth:`numbers`)."""
        out = np.empty((len(rings), self.slots), np.float32)
        for b, at, col in self._blocks(rings):
            out[at] = self.vals[b][:, col].T
        return out

    def put(self, rings: np.ndarray, n: np.ndarray, x: np.ndarray) -> None:
        """Store values ``x`` (NaN: nothing usable) at interval numbers ``n`` of rings ``rings``."""
        lap, s = np.divmod(n, self.slots)
        for b, at, col in self._blocks(rings):
            self.vals[b][s[at], col] = x[at]
            self.laps[b][s[at], col] = np.where(np.isnan(x[at]), 0, lap[at] + 1)
