"""Per-series state of the meter rules in numpy arrays: the hot path of rules that see every meter.

* :class:`SeriesLast` – the previous reading of each series;
* :class:`SeriesRing` – the last N values of each series (rolling checks over N samples);
* :class:`WindowAcc` – sums over the open UTC window of each series.

Each finds a series' row through :class:`SeriesIndex`, a plain array from the batch's dense
numbers (:data:`~pipeline.anomaly.numbering.SID` or ``DID``) to rows, and orders a batch's
samples by series and time with a stable sort of those rows (the numbers come in first-seen
order, so a batch is a few ascending runs). They never reorder the batch's frame: they return
the positions of the samples they evaluated, and the rule gathers only the rows it emits.
Samples not newer than their series' newest are skipped (late or repeated data).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import polars as pl

from pipeline.anomaly.numbering import SID

__all__ = ["SeriesIndex", "SeriesLast", "SeriesRing", "WindowAcc", "each", "same_reading", "series_order"]

_NONE = np.iinfo(np.int64).min


def series_order(rows: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Positions of ``rows``/``ts`` with each series' samples adjacent and in time order (arrival order
    among equal times)."""
    order = np.argsort(rows, kind="stable")
    r, t = rows[order], ts[order]
    if len(r) > 1 and not ((r[1:] != r[:-1]) | (t[1:] >= t[:-1])).all():
        order = np.lexsort((ts, rows))  # samples out of time order within a series: sort by time too
    return order


def each(v: float | np.ndarray, at: np.ndarray) -> np.ndarray:
    """``v[at]`` of an array, or a scalar repeated (a read-only view: no copy)."""
    return v[at] if isinstance(v, np.ndarray) else np.broadcast_to(np.asarray(v), at.shape)


class SeriesIndex:
    """A rule's rows of per-series arrays for the series (or devices) it has seen: a table from the
    numbers in column ``by`` to rows 0, 1, … in first-seen order. Subclasses declare their arrays in
    ``_grow``; they grow by a quarter (doubling left ~40% of a fleet's rows idle)."""

    def __init__(self, by: str = SID) -> None:
        self.by = by
        self._table = np.zeros(0, np.int32)  # number -> row; -1: not seen
        self._used = 0
        self._capacity = 0
        self._last = np.zeros(0, np.int64)  # newest ts per series

    @property
    def series(self) -> int:
        return self._used

    def _grow(self, extra: int) -> None:
        self._last = np.concatenate([self._last, np.full(extra, _NONE)])

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """The row (int64) of every number in ``ids``; numbers not seen before get the next rows."""
        if not len(ids):
            return np.zeros(0, np.int64)
        top = int(ids.max()) + 1
        if top > len(self._table):
            more = max(top - len(self._table), len(self._table) // 4, 1024)
            self._table = np.concatenate([self._table, np.full(more, -1, np.int32)])
        rows = self._table[ids]
        if (rows < 0).any():
            new = pd.unique(ids[rows < 0])  # in order of first sight
            self._table[new] = np.arange(self._used, self._used + len(new), dtype=np.int32)
            self._used += len(new)
            rows = self._table[ids]
            if self._used > self._capacity:
                extra = max(self._used - self._capacity, self._capacity // 4, 64)
                self._grow(extra)
                self._capacity += extra
        return rows.astype(np.int64)

    def _fresh_of(self, ids: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(positions in ``ids``/``ts``, rows, ts) of the samples newer than their series' newest, in series and
        time order (a repeated timestamp: the first sample wins)."""
        rows = self.rows(ids)
        order = series_order(rows, ts)
        rows, ts = rows[order], ts[order]
        fresh = ts > self._last[rows]
        fresh[1:] &= (rows[1:] != rows[:-1]) | (ts[1:] != ts[:-1])
        if fresh.all():
            return order, rows, ts
        return order[fresh], rows[fresh], ts[fresh]


class SeriesLast(SeriesIndex):
    """The previous reading of each new sample (in the batch, or the one kept from earlier batches)."""

    def __init__(self, by: str = SID, fields: Sequence[str] = ()) -> None:
        self.fields = list(fields)
        self._prev: dict[str, np.ndarray] = {f: np.zeros(0) for f in self.fields}
        super().__init__(by)

    def _grow(self, extra: int) -> None:
        super()._grow(extra)
        for f in self.fields:
            self._prev[f] = np.concatenate([self._prev[f], np.full(extra, np.nan)])

    def step(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` (``by`` + ts_ms + fields) → its new rows in series/time order with ``prev_ts`` (null:
        none) and ``prev_<field>`` of the previous reading of the series; remembers the newest."""
        at, prev_ts, prevs = self.advance(frame[self.by].to_numpy(), frame["ts_ms"].to_numpy(),
                                          [frame[f].to_numpy() for f in self.fields])  # fmt: skip
        cols = [pl.Series(f"prev_{f}", p).fill_nan(None) for f, p in zip(self.fields, prevs, strict=True)]
        return frame[at].with_columns(pl.Series("prev_ts", prev_ts).replace(_NONE, None), *cols)

    def advance(self, ids: np.ndarray, ts: np.ndarray,
                values: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:  # fmt: skip
        """Samples (numbers, times, one array per field) → (positions of the new ones in series/time order,
        the previous reading's time (``_NONE``: none) and fields (NaN: none) for each); remembers the newest."""
        at, rows, ts = self._fresh_of(ids, ts)
        first = np.r_[True, rows[1:] != rows[:-1]] if len(rows) else np.zeros(0, bool)
        last = np.r_[rows[1:] != rows[:-1], True] if len(rows) else first
        prev_ts = np.r_[_NONE, ts[:-1]] if len(rows) else ts.copy()
        prev_ts[first] = self._last[rows[first]]
        prevs = []
        for f, field in zip(self.fields, values, strict=True):
            v = field[at].astype(np.float64)
            prev = np.r_[np.nan, v[:-1]] if len(v) else v.copy()
            prev[first] = self._prev[f][rows[first]]
            prevs.append(prev)
            self._prev[f][rows[last]] = v[last]
        self._last[rows[last]] = ts[last]
        return at, prev_ts, prevs


def same_reading(device: np.ndarray, ts: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """For each row ``dst`` of a batch, the first row among ``src`` of the same device and time (-1: none):
    a join on (device number, time) as one int64 key, in numpy (a polars join cost 3 ms a batch)."""
    out = np.full(len(dst), -1, np.int64)
    if not len(src) or not len(dst):
        return out
    t0, span = int(min(ts[src].min(), ts[dst].min())), int(max(ts[src].max(), ts[dst].max())) + 1
    span -= t0
    if int(max(device[src].max(), device[dst].max()) + 1) * span >= 2**62:  # the key would overflow
        ks, kd = (pl.DataFrame({"d": device[x], "t": ts[x]}) for x in (src, dst))
        hit = kd.join(ks.with_row_index("i").unique(["d", "t"], keep="first"), on=["d", "t"], how="left",
                      maintain_order="left")  # fmt: skip
        i = hit["i"]
        return np.where(i.is_null().to_numpy(), -1, src[i.fill_null(0).to_numpy()])
    key_s = device[src].astype(np.int64) * span + (ts[src] - t0)
    key_d = device[dst].astype(np.int64) * span + (ts[dst] - t0)
    keys, first = np.unique(key_s, return_index=True)
    pos = np.minimum(np.searchsorted(keys, key_d), len(keys) - 1)
    found = keys[pos] == key_d
    out[found] = src[first[pos[found]]]
    return out


class SeriesRing(SeriesIndex):
    """The last ``width`` values of many series in one numpy array, for rolling checks over N samples.

    A batch is folded in in rounds, the r-th new sample of every series in round r, so each
    sample sees exactly the samples before it.
    """

    def __init__(self, width: int, by: str = SID) -> None:
        self._vals = np.full((0, max(width, 1)), np.nan)
        self._count = np.zeros(0, np.int32)  # values kept (at most the width)
        self._pos = np.zeros(0, np.int32)  # next slot to write
        super().__init__(by)

    @property
    def width(self) -> int:
        return int(self._vals.shape[1])

    def _grow(self, extra: int) -> None:
        super()._grow(extra)
        self._vals = np.vstack([self._vals, np.full((extra, self._vals.shape[1]), np.nan)])
        self._count = np.concatenate([self._count, np.zeros(extra, np.int32)])
        self._pos = np.concatenate([self._pos, np.zeros(extra, np.int32)])

    def _widen(self, width: int) -> None:
        if width <= self.width:
            return
        old, w = self._vals, self.width
        order = (self._pos[:, None] + np.arange(w)[None, :]) % w  # oldest first
        vals = np.full((old.shape[0], width), np.nan)
        vals[:, width - w :] = np.take_along_axis(old, order, axis=1)
        self._vals, self._pos = vals, np.zeros(old.shape[0], np.int32)  # next write at 0 = the oldest slot

    def roll(self, ids: np.ndarray, ts: np.ndarray, values: np.ndarray, n: int | np.ndarray,
             tol: float | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
        """Fold samples in (series numbers ``ids``, times, values; ``n``, the window length, and ``tol``
        for all or per sample); for every new sample the max and min of it and the ``n - 1`` samples
        before it (NaN where fewer exist). With ``tol``, a sample farther than ``tol`` from the one
        before it gets the max and min of that pair only: its window's span exceeds ``tol`` either
        way, and almost every sample of a live signal is such a one (the window is gathered for the
        others only). Returns (positions of the new samples, in series and time order; hi; lo)."""
        at, rows, ts = self._fresh_of(ids, ts)
        vals = np.asarray(values[at], np.float64)
        need = np.asarray(each(n, at), np.int64) - 1
        near = np.asarray(each(tol, at), np.float64) if tol is not None else None
        self._widen(int(need.max()) if len(need) else 0)
        if not len(rows):
            return at, np.zeros(0), np.zeros(0)
        starts = np.r_[0, np.flatnonzero(rows[1:] != rows[:-1]) + 1]
        sizes = np.diff(np.r_[starts, len(rows)])
        rank = np.arange(len(rows)) - np.repeat(starts, sizes)
        w = self.width
        close = np.ones(len(rows), dtype=bool)  # samples whose window must be gathered
        rounds = close  # samples folded round by round: those of series with a close sample
        before = None
        if near is not None:  # the sample before each one: in the batch, or the newest kept
            before = np.r_[np.nan, vals[:-1]]
            before[starts] = self._vals[rows[starts], (self._pos[rows[starts]] - 1) % w]
            with np.errstate(invalid="ignore"):
                close = ~(np.abs(vals - before) > near)  # NaN (no sample before): the exact way
            close &= self._count[rows] + rank >= need  # fewer samples than a window (a new series): NaN either way
            if not close.any():  # the usual batch: every series is live
                return (at, *self._fold_loose(rows, vals, ts, before, rank, need, starts, sizes))
            rounds = np.repeat(np.add.reduceat(close, starts) > 0, sizes)
        hi, lo = np.full(len(rows), np.nan), np.full(len(rows), np.nan)
        if before is not None and not rounds.all():
            loose = np.flatnonzero(~rounds)
            s = sizes[~rounds[starts]]  # the sizes of the loose series
            hi[loose], lo[loose] = self._fold_loose(rows[loose], vals[loose], ts[loose], before[loose], rank[loose],
                                                    need[loose], np.cumsum(np.r_[0, s[:-1]]), s)  # fmt: skip
        uniform = bool((need == w).all())  # every slot is in every window: their order does not matter
        for r in range(int(rank[rounds].max()) + 1 if rounds.any() else 0):  # round r: the r-th new sample of each
            sel = np.flatnonzero(rounds & (rank == r))
            idx, v = rows[sel], vals[sel]
            h, lw = v.copy(), v.copy()
            if before is not None:  # a far sample: the pair with the one before it (the ring's newest now)
                h, lw = np.fmax(h, before[sel]), np.fmin(lw, before[sel])
            e = np.flatnonzero(close[sel])
            if len(e):
                with np.errstate(invalid="ignore"):
                    h[e], lw[e] = self._window(idx[e], v[e], need[sel][e], uniform)
            ok = self._count[idx] >= need[sel]
            hi[sel], lo[sel] = np.where(ok, h, np.nan), np.where(ok, lw, np.nan)
            self._vals[idx, self._pos[idx]] = v
            self._pos[idx] = (self._pos[idx] + 1) % w
            self._count[idx] = np.minimum(self._count[idx] + 1, w)
            self._last[idx] = ts[sel]
        return at, hi, lo

    def _fold_loose(self, rows: np.ndarray, vals: np.ndarray, ts: np.ndarray, before: np.ndarray, rank: np.ndarray,
                    need: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, ...]:  # fmt: skip
        """All samples of series (``starts``, ``sizes``) none of whose samples is within ``tol`` of the one
        before, at once: each gets the max and min of itself and that one (hi, lo, returned); the ring
        keeps the last ``width`` of each series."""
        w = self.width
        count0, pos0 = self._count[rows], self._pos[rows]
        ok = count0 + rank >= need  # the count the r-th sample would see: min(count0 + r, w)
        with np.errstate(invalid="ignore"):
            hi = np.fmax(vals, before)
            lo = np.fmin(vals, before)
        hi[~ok] = np.nan
        lo[~ok] = np.nan
        if sizes.max() > w:  # only the last w samples of a series: distinct slots
            keep = rank >= np.repeat(sizes, sizes) - w
            np.put(self._vals, rows[keep] * w + (pos0[keep] + rank[keep]) % w, vals[keep])
        else:  # (the usual batch) rank < w: a subtraction for the modulo
            slot = pos0 + rank
            slot -= w * (slot >= w)
            np.put(self._vals, rows * w + slot, vals)  # in the flattened ring
        series = rows[starts]
        self._pos[series] = (pos0[starts] + sizes) % w
        self._count[series] = np.minimum(count0[starts] + sizes, w)
        self._last[series] = ts[starts + sizes - 1]
        return hi, lo

    def _window(self, idx: np.ndarray, v: np.ndarray, need: np.ndarray, uniform: bool) -> tuple[np.ndarray, np.ndarray]:
        """Max and min of ``v`` and the ``need`` newest kept values of each row's series."""
        if uniform:
            prev = self._vals[idx]
        else:  # newest first; slots beyond a row's window count as the value itself (neutral)
            back = np.arange(1, self.width + 1)
            prev = self._vals[idx[:, None], (self._pos[idx][:, None] - back[None, :]) % self.width]
            prev = np.where(back[None, :] <= need[:, None], prev, v[:, None])
        return np.maximum(prev.max(axis=1), v), np.minimum(prev.min(axis=1), v)


class WindowAcc(SeriesIndex):
    """Sums over UTC-aligned windows per series, kept in numpy; each window is returned once, complete.

    A window of a series is complete once a later reading of the series, in a later window,
    has been seen (within the batch or in a later one). Rows at or before the series' newest
    reading are ignored (late data), so every window is evaluated at most once. Rows carry
    ``width_ms`` (windows may differ per tenant/site).
    """

    def __init__(self, sums: Sequence[str], carry: Sequence[str], by: str = SID) -> None:
        self.sums = list(sums)
        self.carry = list(carry)  # columns returned with a window (from the batch's first row of it)
        self._win = np.zeros(0, np.int64)
        self._width = np.zeros(0, np.int64)
        self._acc = np.zeros((0, len(self.sums)))
        super().__init__(by)

    @property
    def open_windows(self) -> int:
        return int(np.count_nonzero(self._win[: self.series] >= 0)) if self.series else 0

    def _grow(self, extra: int) -> None:
        super()._grow(extra)
        self._win = np.concatenate([self._win, np.full(extra, -1, np.int64)])
        self._width = np.concatenate([self._width, np.zeros(extra, np.int64)])
        self._acc = np.vstack([self._acc, np.zeros((extra, len(self.sums)))])

    def add(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Fold ``frame`` (``by``, carry, ts_ms, width_ms, sums) in; return the windows now complete:
        carry + ``window_ms`` + ``width_ms`` + sums."""
        schema = {**{c: frame.schema[c] for c in self.carry}, "window_ms": pl.Int64(), "width_ms": pl.Int64(),
                  **{s: pl.Float64() for s in self.sums}}  # fmt: skip
        sums = [frame[s].to_numpy() for s in self.sums]
        pos, win, width, acc = self.fold(frame[self.by].to_numpy(), frame["ts_ms"].to_numpy(),
                                         frame["width_ms"].to_numpy(), sums)  # fmt: skip
        if not len(pos):
            return pl.DataFrame(schema=schema)
        out = frame[pos].select(self.carry).with_columns(
            pl.Series("window_ms", win), pl.Series("width_ms", width),
            *(pl.Series(s, acc[:, j]) for j, s in enumerate(self.sums)),
        )  # fmt: skip
        return out.cast(schema)  # type: ignore[arg-type]

    def fold(self, ids: np.ndarray, ts: np.ndarray, width: np.ndarray,
             sums: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
        """Fold samples in (numbers, times, window widths, one array per sum); return the windows now
        complete: (for each, the position among the samples of the first of its series' samples in the batch;
        window start; width; sums, one column per sum)."""
        at, rows, ts = self._fresh_of(ids, ts)
        if not len(rows):
            return at, at, at, np.zeros((0, len(self.sums)))
        width = np.asarray(width[at], np.int64)
        win = ts // width * width
        acc = np.column_stack([np.asarray(x[at], np.float64) for x in sums])
        # samples are in series and time order, so a (series, window) group is a run of adjacent samples
        g = np.flatnonzero(np.r_[True, (rows[1:] != rows[:-1]) | (win[1:] != win[:-1]) | (width[1:] != width[:-1])])
        if len(g) < len(rows):
            acc = np.add.reduceat(acc, g, axis=0)
        g_row, g_win, g_width, g_at = rows[g], win[g], width[g], at[g]
        g_ts = ts[np.r_[g[1:], len(rows)] - 1]  # the newest reading of each group
        first = np.r_[True, g_row[1:] != g_row[:-1]]
        last = np.r_[g_row[1:] != g_row[:-1], True]
        # the kept open window of a series continues into the batch's first window, or is complete
        r0 = g_row[first]
        cont = self._win[r0] == g_win[first]
        acc[np.flatnonzero(first)[cont]] += self._acc[r0[cont]]
        done = (self._win[r0] >= 0) & ~cont
        # complete: kept windows that did not continue, and every window of the batch but the last of each
        # series (which stays open)
        p = r0[done]
        out = (np.r_[g_at[first][done], g_at[~last]], np.r_[self._win[p], g_win[~last]],
               np.r_[self._width[p], g_width[~last]], np.r_[self._acc[p], acc[~last]])  # fmt: skip
        rl = g_row[last]
        self._win[rl], self._width[rl], self._acc[rl] = g_win[last], g_width[last], acc[last]
        self._last[rl] = g_ts[last]
        return out
