"""Shared machinery of the meter rules: parameters, registry attributes and bounded per-series state.

Every meter rule is a pure function of the ordered readings of a device plus a little
state carried between batches. The state kept here is bounded per series:

* :class:`SeriesTail` – the last ``n`` rows of each series, as a polars frame (rolling
  windows of N samples over a few series: generators, HVAC units);
* :class:`Watermarks` – the newest event time seen per series, as a polars frame;
* :class:`SeriesLast`, :class:`SeriesRing`, :class:`WindowAcc` – per-series numpy arrays
  (previous reading; last N values; sums of the open time window), found through a 64-bit
  hash of the series key in :class:`KeyRows` (hash tables kept between batches): the
  hot-path state of rules that see every meter.

Rules assume a device's readings arrive roughly in event-time order; a reading older than
the series' newest is ignored by the rules that need order (the lifecycle ignores
evaluations older than the last one it applied anyway).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from pipeline.anomaly.catalogue import COMMON_PARAMS, RULES
from pipeline.anomaly.inputs import Context
from pipeline.anomaly.model import empty_evaluations, evaluations
from pipeline.anomaly.policy import Policy
from pipeline.tenancy.registry import Registration

__all__ = [
    "DEVICE",
    "DeviceAttrs",
    "KeyRows",
    "SeriesIndex",
    "SeriesLast",
    "SeriesRing",
    "SeriesTail",
    "Watermarks",
    "WindowAcc",
    "attribute",
    "field",
    "finish",
    "full",
    "iso",
    "iso_expr",
    "lag",
    "merge_per_ts",
    "relevant",
    "with_message",
    "with_params",
]

DEVICE = ["tenant_id", "site_id", "device_id"]


def iso(ts_ms: int) -> str:
    """Epoch ms → ``2026-11-18T10:15Z`` (minute precision, UTC)."""
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%MZ")


def iso_expr(col: str) -> pl.Expr:
    return pl.from_epoch(pl.col(col), time_unit="ms").dt.strftime("%Y-%m-%dT%H:%MZ")


_PARAM_FRAMES: weakref.WeakKeyDictionary[Policy, dict[str, pl.DataFrame]] = weakref.WeakKeyDictionary()


def _param_frame(policy: Policy, rule: str, pairs: pl.DataFrame) -> pl.DataFrame:
    """All parameters of ``rule`` per (tenant, site) pair, cached per policy (a Policy never changes)."""
    names = ["enabled", *sorted(set(RULES[rule].params) | set(COMMON_PARAMS) - {"enabled"})]
    cache = _PARAM_FRAMES.setdefault(policy, {})
    known = cache.get(rule)
    missing = pairs if known is None else pairs.join(known, on=["tenant_id", "site_id"], how="anti")
    if missing.height:
        rows = [policy.params(rule, t, s) for t, s in missing.iter_rows()]
        fresh = missing.hstack(pl.DataFrame({n: [r[n] for r in rows] for n in names}))
        known = fresh if known is None else pl.concat([known, fresh], how="vertical_relaxed")
        cache[rule] = known
    assert known is not None
    return known


def with_params(ctx: Context, rule: str, frame: pl.DataFrame, names: Sequence[str]) -> pl.DataFrame:
    """``frame`` (with tenant_id, site_id) plus one column per parameter of ``rule`` in ``names``; rows of
    (tenant, site) pairs where the rule is disabled are dropped. Parameters the same for every pair of the
    batch become literals (no join)."""
    if frame.is_empty():
        return frame.with_columns(pl.lit(None).alias(n) for n in names)
    same = ctx.policy.uniform(rule)
    if same is not None:  # no tenant or site overrides this rule: literals, without looking at the pairs
        if same["enabled"] is False:
            return frame.clear().with_columns(pl.lit(None).alias(n) for n in names)
        return frame.with_columns(pl.lit(same[n]).alias(n) for n in names)
    pairs = frame.select("tenant_id", "site_id").unique()
    params = _param_frame(ctx.policy, rule, pairs).join(pairs, on=["tenant_id", "site_id"], how="semi")
    cols = ["enabled", *names]
    varying = [n for n in cols if params[n].n_unique() > 1]
    const = {n: params[n][0] for n in cols if n not in varying}
    if const.get("enabled") is False:
        return frame.clear().with_columns(pl.lit(None).alias(n) for n in names)
    if varying:
        frame = frame.join(params.select("tenant_id", "site_id", *varying), on=["tenant_id", "site_id"])
        if "enabled" in varying:
            frame = frame.filter(pl.col("enabled")).drop("enabled")
    return frame.with_columns(pl.lit(v).alias(n) for n, v in const.items() if n != "enabled")


Getter = Callable[[Registration, Context], Any]


class DeviceAttrs:
    """Registry attributes of devices, one column per getter, cached in a polars frame and read
    again after ``max_age_ms`` of wall-clock time (a registry change takes effect within that):
    looking 10,000 devices up in the registry every batch costs more than the rule itself."""

    def __init__(self, getters: dict[str, tuple[pl.DataType, Getter]], max_age_ms: int = 300_000) -> None:
        self.getters = getters
        self.max_age_ms = max_age_ms
        self._schema = {"device_id": pl.Utf8(), **{n: t for n, (t, _) in getters.items()}, "_at": pl.Int64()}
        self._cache = pl.DataFrame(schema=self._schema)

    def __call__(self, ctx: Context, device_ids: pl.Series) -> pl.DataFrame:
        """device_id + attributes of (at least) the registered devices among ``device_ids``: join it."""
        ids = device_ids.to_frame("device_id")  # repeated ids are fine for the anti-join (unique is dearer)
        stale = self._cache.height and int(self._cache["_at"].min()) <= ctx.now_ms - self.max_age_ms  # type: ignore[arg-type]
        fresh = self._cache.filter(pl.col("_at") > ctx.now_ms - self.max_age_ms) if stale else self._cache
        need = list(dict.fromkeys(ids.join(fresh, on="device_id", how="anti")["device_id"].to_list()))
        if need:
            regs = ctx.registry.lookup_many(need)
            data: dict[str, list[Any]] = {"device_id": list(regs)}
            for name, (_, get) in self.getters.items():
                data[name] = [get(r, ctx) for r in regs.values()]
            new = pl.DataFrame({**data, "_at": [ctx.now_ms] * len(regs)}, schema=self._schema)
            self._cache = pl.concat([self._cache.join(new, on="device_id", how="anti"), new])
        return self._cache.drop("_at")


def attribute(name: str) -> Getter:
    """Getter of a registration's ``attributes[name]`` (None when absent)."""

    def get(r: Registration, ctx: Context) -> Any:
        attrs = r.record.get("attributes") or {}
        return attrs.get(name) if isinstance(attrs, dict) else None

    return get


def field(name: str) -> Getter:
    """Getter of a field of the raw registration record."""

    def get(r: Registration, ctx: Context) -> Any:
        return r.record.get(name)

    return get


def finish(frame: pl.DataFrame, rule: str) -> pl.DataFrame:
    """Conform a rule's rows (DEVICE columns, ts_ms, firing, severity, observed, threshold, message)."""
    if frame.is_empty():
        return empty_evaluations()
    return evaluations(frame.rename({"device_id": "subject_id"}), rule=rule, subject_type="device")


def relevant(rows: pl.DataFrame, ctx: Context, rule: str) -> pl.DataFrame:
    """``rows`` (device_id, firing, ...) without the non-firing rows of devices that neither fire here nor
    have an open ``rule`` episode (:attr:`Context.open`; all rows when it is None). The lifecycle ignores
    those rows, which are almost all of a quiet batch: merging, formatting and handing them on was most
    of the cost around the rules. Call it on all of one rule's rows of a batch at once."""
    if ctx.open is None or rows.is_empty():
        return rows
    keep = set(ctx.open.get(rule, ()))
    keep.update(rows.filter(pl.col("firing")).get_column("device_id").unique().to_list())
    return rows.filter(pl.col("firing") | pl.col("device_id").is_in(list(keep))) if keep else rows.clear()


def with_message(frame: pl.DataFrame, message: pl.Expr) -> pl.DataFrame:
    """Set ``message`` on the firing rows only: formatting is the costly part of a rule, and the
    lifecycle publishes the text of firing evaluations only (non-firing rows get "")."""
    fire = frame.filter(pl.col("firing")).rechunk()  # rechunk: pl.format on chunked frames can panic (polars 2.1)
    rest = frame.filter(~pl.col("firing")).with_columns(message=pl.lit(""))
    return pl.concat([fire.with_columns(message=message), rest], how="diagonal_relaxed")


def merge_per_ts(frame: pl.DataFrame) -> pl.DataFrame:
    """One row per (device, ts): a firing part wins (the most severe), else any non-firing part."""
    if frame.is_empty():
        return frame
    key = [*DEVICE, "ts_ms"]
    fire = frame.filter(pl.col("firing")).sort("severity", "message", descending=[True, False])
    fire = fire.unique(key, keep="first", maintain_order=True)
    rest = frame.filter(~pl.col("firing")).unique(key, keep="first").join(fire.select(key), on=key, how="anti")
    return pl.concat([fire, rest], how="diagonal_relaxed")


def lag(expr: pl.Expr, k: int = 1) -> pl.Expr:
    """``expr`` k rows earlier in the same series (null across series), in a :meth:`SeriesTail.context`."""
    return pl.when(pl.col("_sid").shift(k) == pl.col("_sid")).then(expr.shift(k))


def full(n: int) -> pl.Expr:
    """True where the last ``n`` rows (this one included) belong to the same series."""
    return (pl.col("_sid").shift(n - 1) == pl.col("_sid")).fill_null(False)


class SeriesTail:
    """The last ``n`` rows (by ``ts_ms``) of each series, carried between batches."""

    def __init__(self, keys: Sequence[str], schema: dict[str, pl.DataType], n: int) -> None:
        self.keys = list(keys)
        self.n = n
        self._state = pl.DataFrame(schema=schema)

    @property
    def rows(self) -> int:
        return self._state.height

    def context(self, new: pl.DataFrame) -> pl.DataFrame:
        """Kept rows of the touched series + the new rows after them, sorted, with ``_new`` and ``_sid``
        (a series number: use :func:`lag` and :func:`full` rather than ``over``, which is slow on many series).

        New rows at or before a series' newest kept row (late or repeated) are dropped, and
        so are repeated timestamps within the batch (first row wins)."""
        keys = self.keys
        new = new.select(self._state.columns).unique([*keys, "ts_ms"], keep="first", maintain_order=True)
        kept = self._state.join(new.select(keys).unique(), on=keys, how="semi")
        last = kept.group_by(keys).agg(_last=pl.col("ts_ms").max())
        fresh = (new.join(last, on=keys, how="left")
                 .filter(pl.col("_last").is_null() | (pl.col("ts_ms") > pl.col("_last"))).drop("_last"))  # fmt: skip
        both = pl.concat([kept.with_columns(_new=pl.lit(False)), fresh.with_columns(_new=pl.lit(True))])
        return both.sort([*keys, "ts_ms"]).with_columns(_sid=pl.struct(keys).rle_id())

    def keep(self, context: pl.DataFrame) -> None:
        """Remember the last ``n`` rows of every series in ``context`` (from :meth:`context`)."""
        if context.is_empty():
            return
        tail = context.group_by(self.keys, maintain_order=True).tail(self.n).select(self._state.columns)
        others = self._state.join(tail.select(self.keys).unique(), on=self.keys, how="anti")
        self._state = pl.concat([others, tail])


class Watermarks:
    """Newest event time seen per key (e.g. per device, over all its quantities)."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = list(keys)
        self._state = pl.DataFrame(schema={**{k: pl.Utf8() for k in self.keys}, "mark": pl.Int64()})

    def advance(self, rows: pl.DataFrame) -> pl.DataFrame:
        """Fold ``rows`` (keys + ts_ms) in; return keys + ``prev`` (null if new) + ``mark`` per touched key."""
        seen = rows.group_by(self.keys).agg(_max=pl.col("ts_ms").max())
        out = seen.join(self._state.rename({"mark": "prev"}), on=self.keys, how="left").select(
            *self.keys, "prev", mark=pl.max_horizontal("prev", "_max")
        )
        others = self._state.join(out.select(self.keys), on=self.keys, how="anti")
        self._state = pl.concat([others, out.select(*self.keys, "mark")])
        return out


class KeyRows:
    """64-bit series keys → row numbers (0, 1, … in first-seen order), in hash tables kept between batches.

    A polars join against a frame of every known key rebuilt that frame's hash table on every
    call: per batch, every rule with series state paid for the whole fleet (with 100,000 meters,
    ~30 ms a lookup even for a batch of 500 readings). pandas keeps an Index's hash table until
    the Index changes, so a lookup costs the batch, not the fleet. New keys go to a small second
    table, merged into the main one when it reaches an eighth of it: a trickle of new series
    does not rebuild the large table every batch.
    """

    def __init__(self, merge_at: int = 4096) -> None:
        self._main = pd.Index(np.zeros(0, np.uint64))
        self._new = pd.Index(np.zeros(0, np.uint64))
        self._merge_at = merge_at  # the small table is merged when larger than this and an eighth of the main one

    def __len__(self) -> int:
        return len(self._main) + len(self._new)

    def rows(self, keys: np.ndarray) -> np.ndarray:
        """The row of every key (int64); keys not seen before get the next rows, in order of first sight."""
        rows = self._main.get_indexer(keys).astype(np.int64, copy=False)
        miss = rows < 0
        if not miss.any():
            return rows
        if len(self._new):
            extra = self._new.get_indexer(keys[miss])
            rows[miss] = np.where(extra >= 0, extra + len(self._main), -1)
            miss = rows < 0
            if not miss.any():
                return rows
        unseen = pd.Index(pd.unique(keys[miss]))
        rows[miss] = len(self) + unseen.get_indexer(keys[miss])
        self._new = self._new.append(unseen)
        if len(self._new) > max(len(self._main) // 8, self._merge_at):
            self._main, self._new = self._main.append(self._new), pd.Index(np.zeros(0, np.uint64))
        return rows


class SeriesIndex:
    """Stable row numbers of series (a 64-bit hash of the key columns, looked up in :class:`KeyRows`),
    with numpy arrays per series that grow with it. Subclasses declare their arrays in ``_grow``."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = list(keys)
        self._index = KeyRows()
        self._capacity = 0
        self._last = np.zeros(0, np.int64)  # newest ts per series

    @property
    def series(self) -> int:
        return len(self._index)

    def _grow(self, extra: int) -> None:
        self._last = np.concatenate([self._last, np.full(extra, np.iinfo(np.int64).min)])

    def assign(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` (with the key columns) + ``_row``, the row of its series (new series get new rows)."""
        keys = frame.select(pl.struct(self.keys).hash(seed=7)).to_series().to_numpy()
        rows = self._index.rows(keys)
        if len(self._index) > self._capacity:  # grow by a quarter: doubling left ~40% of a fleet's rows idle
            extra = max(len(self._index) - self._capacity, self._capacity // 4, 64)
            self._grow(extra)
            self._capacity += extra
        return frame.with_columns(_row=pl.Series(rows, dtype=pl.Int64))

    def _rows(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` + ``_row``, sorted by series and time (new series get new rows)."""
        return self.assign(frame).sort("_row", "ts_ms", maintain_order=True)

    def _fresh(self, frame: pl.DataFrame) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
        """Rows newer than their series' newest (a repeated timestamp: the first row wins)."""
        frame = self._rows(frame)
        rows, ts = frame["_row"].to_numpy(), frame["ts_ms"].to_numpy()
        fresh = ts > self._last[rows]
        fresh[1:] &= (rows[1:] != rows[:-1]) | (ts[1:] != ts[:-1])
        if not fresh.all():
            frame, rows, ts = frame.filter(pl.Series(fresh)), rows[fresh], ts[fresh]
        return frame, rows, ts


class SeriesLast(SeriesIndex):
    """The previous reading of each new sample (in the batch, or the one kept from earlier batches)."""

    def __init__(self, keys: Sequence[str], fields: Sequence[str] = ()) -> None:
        self.fields = list(fields)
        self._prev: dict[str, np.ndarray] = {f: np.zeros(0) for f in self.fields}
        super().__init__(keys)

    def _grow(self, extra: int) -> None:
        super()._grow(extra)
        for f in self.fields:
            self._prev[f] = np.concatenate([self._prev[f], np.full(extra, np.nan)])

    def step(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` (keys + ts_ms + fields) → its new rows in series/time order with ``prev_ts`` (null:
        none) and ``prev_<field>`` of the previous reading of the series; remembers the newest."""
        frame, rows, ts = self._fresh(frame)
        if not len(rows):
            return frame.drop("_row").with_columns(
                pl.lit(None, pl.Int64).alias("prev_ts"),
                *(pl.lit(None, pl.Float64).alias(f"prev_{f}") for f in self.fields),
            )
        first = np.r_[True, rows[1:] != rows[:-1]]
        last = np.r_[rows[1:] != rows[:-1], True]
        prev_ts = np.r_[np.iinfo(np.int64).min, ts[:-1]]
        prev_ts[first] = self._last[rows[first]]
        cols = {"prev_ts": pl.Series(prev_ts).replace(np.iinfo(np.int64).min, None)}
        for f in self.fields:
            v = frame[f].to_numpy().astype(np.float64)
            prev = np.r_[np.nan, v[:-1]]
            prev[first] = self._prev[f][rows[first]]
            cols[f"prev_{f}"] = pl.Series(prev).fill_nan(None)
            self._prev[f][rows[last]] = v[last]
        self._last[rows[last]] = ts[last]
        return frame.drop("_row").with_columns(**cols)


class SeriesRing(SeriesIndex):
    """The last ``width`` values of many series in one numpy array, for rolling checks over N samples.

    A batch is folded in in rounds, the r-th new sample of every series in round r, so each
    sample sees exactly the samples before it; samples not newer than a series' last one are skipped.
    """

    def __init__(self, keys: Sequence[str], width: int) -> None:
        self._vals = np.full((0, max(width, 1)), np.nan)
        self._count = np.zeros(0, np.int32)  # values kept (at most the width)
        self._pos = np.zeros(0, np.int32)  # next slot to write
        super().__init__(keys)

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

    def roll(self, frame: pl.DataFrame, n: str, tol: str | None = None) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
        """Fold ``frame`` (keys + ts_ms + value + column ``n``, the window length per row) in; for every
        new sample the max and min of it and the ``n - 1`` samples before it (NaN where fewer exist).
        With ``tol`` (a column), a sample farther than ``tol`` from the one before it gets the max and
        min of that pair only: its window's span exceeds ``tol`` either way, and almost every sample of
        a live signal is such a one (the window is gathered for the others only).
        Returns (the rows kept, in series and time order; hi; lo)."""
        frame, rows, ts = self._fresh(frame)
        vals = frame["value"].to_numpy().astype(np.float64)
        need = frame[n].to_numpy().astype(np.int64) - 1
        near = frame[tol].to_numpy().astype(np.float64) if tol is not None else None
        self._widen(int(need.max()) if len(need) else 0)
        hi, lo = np.full(len(rows), np.nan), np.full(len(rows), np.nan)
        if not len(rows):
            return frame.drop("_row"), hi, lo
        starts = np.r_[0, np.flatnonzero(np.diff(rows)) + 1]
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
            rounds = np.repeat(np.add.reduceat(close, starts) > 0, sizes)
            if not rounds.all():
                loose = ~rounds
                self._fold_loose(rows[loose], vals[loose], ts[loose], before[loose], rank[loose], need[loose],
                                 hi, lo, np.flatnonzero(loose))  # fmt: skip
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
        return frame.drop("_row"), hi, lo

    def _fold_loose(self, rows: np.ndarray, vals: np.ndarray, ts: np.ndarray, before: np.ndarray, rank: np.ndarray,
                    need: np.ndarray, hi: np.ndarray, lo: np.ndarray, at: np.ndarray) -> None:  # fmt: skip
        """All samples of series none of whose samples is within ``tol`` of the one before, at once: each
        gets the max and min of itself and that one; the ring keeps the last ``width`` of each series."""
        w = self.width
        count0, pos0 = self._count[rows], self._pos[rows]
        ok = count0 + rank >= need  # the count the r-th sample would see: min(count0 + r, w)
        with np.errstate(invalid="ignore"):
            hi[at] = np.where(ok, np.fmax(vals, before), np.nan)
            lo[at] = np.where(ok, np.fmin(vals, before), np.nan)
        starts = np.r_[0, np.flatnonzero(np.diff(rows)) + 1]
        sizes = np.diff(np.r_[starts, len(rows)])
        keep = rank >= np.repeat(sizes, sizes) - w  # the last w samples of a series: distinct slots
        self._vals[rows[keep], (pos0[keep] + rank[keep]) % w] = vals[keep]
        series = rows[starts]
        self._pos[series] = (pos0[starts] + sizes) % w
        self._count[series] = np.minimum(count0[starts] + sizes, w)
        self._last[series] = ts[starts + sizes - 1]

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
    """Sums over UTC-aligned windows per series, kept in numpy; each window is popped once, complete.

    A window of a series is complete once a later reading of the series, in a later window,
    has been seen (within the batch or in a later one). Rows at or before the series' newest
    reading are ignored (late data), so every window is evaluated at most once. Rows carry
    ``width_ms`` (windows may differ per tenant/site).
    """

    def __init__(self, keys: Sequence[str], sums: Sequence[str], carry: Sequence[str]) -> None:
        self.sums = list(sums)
        self.carry = list(carry)  # key columns to return with a window (from the batch rows of the series)
        self._win = np.zeros(0, np.int64)
        self._width = np.zeros(0, np.int64)
        self._acc = np.zeros((0, len(self.sums)))
        self._none = pl.DataFrame(schema={**{c: pl.Utf8() for c in self.carry}, "window_ms": pl.Int64(),
                                          "width_ms": pl.Int64(), **{s: pl.Float64() for s in self.sums}})  # fmt: skip
        super().__init__(keys)

    @property
    def open_windows(self) -> int:
        return int(np.count_nonzero(self._win[: self.series] >= 0)) if self.series else 0

    def _grow(self, extra: int) -> None:
        super()._grow(extra)
        self._win = np.concatenate([self._win, np.full(extra, -1, np.int64)])
        self._width = np.concatenate([self._width, np.zeros(extra, np.int64)])
        self._acc = np.vstack([self._acc, np.zeros((extra, len(self.sums)))])

    def add(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Fold ``frame`` (keys, carry, ts_ms, width_ms, sums) in; return the windows now complete:
        carry + ``window_ms`` + ``width_ms`` + sums."""
        frame, rows, _ = self._fresh(frame)
        out_schema = self._none.schema
        if not len(rows):
            return self._none.clone()
        frame = frame.with_columns(window_ms=pl.col("ts_ms") // pl.col("width_ms") * pl.col("width_ms"))
        win, width = frame["window_ms"].to_numpy(), frame["width_ms"].to_numpy()
        acc = frame.select(self.sums).to_numpy().astype(np.float64)
        # rows are in series and time order, so a (series, window) group is a run of adjacent rows
        start = np.r_[True, (rows[1:] != rows[:-1]) | (win[1:] != win[:-1]) | (width[1:] != width[:-1])]
        if not start.all():  # several readings in one window: sum each run, carry its first row's keys
            at = np.flatnonzero(start)
            acc = np.add.reduceat(acc, at, axis=0)
            newest = frame["ts_ms"].to_numpy()[np.r_[at[1:], len(rows)] - 1]
            groups = frame[at].select("_row", "window_ms", "width_ms", *self.carry).with_columns(_ts=pl.Series(newest))
        else:  # one reading per series and window
            groups = frame.select("_row", "window_ms", "width_ms", *self.carry, _ts="ts_ms")
        g_row = groups["_row"].to_numpy()
        g_win = groups["window_ms"].to_numpy()
        g_width = groups["width_ms"].to_numpy()
        first = np.r_[True, g_row[1:] != g_row[:-1]]
        last = np.r_[g_row[1:] != g_row[:-1], True]
        # the kept open window of a series continues into the batch's first window, or is complete
        r0 = g_row[first]
        cont = self._win[r0] == g_win[first]
        acc[np.flatnonzero(first)[cont]] += self._acc[r0[cont]]
        done_prev = (self._win[r0] >= 0) & ~cont
        rl = g_row[last]
        if not done_prev.any() and last.all():  # no window completes (most batches): keep, return nothing
            self._win[rl], self._width[rl], self._acc[rl] = g_win, g_width, acc
            self._last[rl] = groups["_ts"].to_numpy()
            return self._none.clone()
        prev = pl.DataFrame({"_row": r0[done_prev], "window_ms": self._win[r0[done_prev]],
                             "width_ms": self._width[r0[done_prev]],
                             **{s: self._acc[r0[done_prev], j] for j, s in enumerate(self.sums)}})  # fmt: skip
        carry = groups.filter(pl.Series(first)).select("_row", *self.carry)
        prev = prev.join(carry, on="_row", how="left")
        # every window of the batch but the last of each series is complete; the last stays open
        closed = groups.with_columns(*(pl.Series(s, acc[:, j]) for j, s in enumerate(self.sums))).filter(
            ~pl.Series(last)
        )
        self._win[rl], self._width[rl], self._acc[rl] = g_win[last], g_width[last], acc[last]
        self._last[rl] = groups["_ts"].to_numpy()[last]
        cols = [*self.carry, "window_ms", "width_ms", *self.sums]
        return pl.concat([prev.select(cols), closed.select(cols)], how="vertical_relaxed").cast(out_schema)  # type: ignore[arg-type]
