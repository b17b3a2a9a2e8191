"""Shared machinery of the meter rules: parameters, registry attributes, evaluation frames, small state.

Every meter rule is a pure function of the ordered readings of a device plus a little
state carried between batches. The state kept here is bounded per series and held in polars
frames, for rules that see few series (generators, HVAC units):

* :class:`SeriesTail` – the last ``n`` rows of each series (rolling windows of N samples);
* :class:`Watermarks` – the newest event time seen per series.

The hot-path state of rules that see every meter is in numpy arrays:
:mod:`pipeline.anomaly.series_state`, indexed by the batch's :mod:`~pipeline.anomaly.numbering`.

Rules assume a device's readings arrive roughly in event-time order; a reading older than
the series' newest is ignored by the rules that need order (the lifecycle ignores
evaluations older than the last one it applied anyway).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl

from pipeline.anomaly.catalogue import COMMON_PARAMS, RULES
from pipeline.anomaly.inputs import Context
from pipeline.anomaly.model import empty_evaluations, evaluations
from pipeline.anomaly.numbering import DID
from pipeline.anomaly.policy import Policy
from pipeline.tenancy.registry import Registration

__all__ = [
    "DEVICE",
    "DeviceAttrs",
    "DeviceFloats",
    "SeriesTail",
    "Watermarks",
    "attribute",
    "field",
    "finish",
    "full",
    "iso",
    "iso_expr",
    "keep_relevant",
    "lag",
    "merge_per_ts",
    "param_column",
    "relevant",
    "row_params",
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


class DeviceFloats:
    """Numeric registry attributes of devices (NaN: none), one numpy array per getter indexed by the
    device number (:data:`~pipeline.anomaly.numbering.DID`), read again after ``max_age_ms`` of wall-clock
    time, as :class:`DeviceAttrs`: for a rule that needs them for every device of every batch, where a
    join on device ids cost more than the rule."""

    def __init__(self, *getters: Getter, max_age_ms: int = 300_000) -> None:
        self.getters = getters
        self.max_age_ms = max_age_ms
        self._at = np.zeros(0, np.int64)  # when read; 0: never (or not registered then)
        self._vals = [np.zeros(0) for _ in getters]

    def __call__(self, ctx: Context, frame: pl.DataFrame, rows: np.ndarray) -> list[np.ndarray]:
        """Per getter, the attribute of the device of each of rows ``rows`` of ``frame`` (device_id, DID)."""
        ids = frame[DID].to_numpy()[rows]
        if len(ids) and int(ids.max()) >= len(self._at):
            more = max(int(ids.max()) + 1 - len(self._at), len(self._at) // 4, 1024)
            self._at = np.concatenate([self._at, np.zeros(more, np.int64)])
            self._vals = [np.concatenate([v, np.full(more, np.nan)]) for v in self._vals]
        stale = np.flatnonzero(self._at[ids] <= ctx.now_ms - self.max_age_ms)
        if len(stale):
            nums, first = np.unique(ids[stale], return_index=True)
            regs = [ctx.registry.get(d) for d in frame["device_id"].gather(rows[stale[first]]).to_list()]
            for get, vals in zip(self.getters, self._vals, strict=True):
                got = [get(r, ctx) if r is not None else None for r in regs]
                vals[nums] = np.array([np.nan if v is None else float(v) for v in got])
            self._at[nums] = np.where([r is not None for r in regs], ctx.now_ms, 0)
        return [v[ids] for v in self._vals]


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


def keep_relevant(ctx: Context, rule: str, device_id: pl.Series, rows: np.ndarray, firing: np.ndarray,
                  also: Iterable[str] = ()) -> np.ndarray:  # fmt: skip
    """The rows :func:`relevant` would keep, as a mask over ``rows`` (positions in a batch whose device ids
    are ``device_id``) with ``firing`` known: all when there is no lifecycle, else the firing ones and
    those of devices that fire here, are in ``also`` (fire in another part of the rule) or have an open
    ``rule`` episode. For a rule to build only those rows: on a quiet batch, none."""
    if ctx.open is None:
        return np.ones(len(rows), bool)
    watch = {*ctx.open.get(rule, ()), *also, *device_id.gather(rows[firing]).to_list()}
    return firing | device_id.is_in(list(watch)).to_numpy()[rows] if watch else firing


def row_params(ctx: Context, rule: str, frame: pl.DataFrame, rows: np.ndarray,
               names: Sequence[str]) -> tuple[np.ndarray, dict[str, Any]]:  # fmt: skip
    """The parameters ``names`` of ``rule`` at rows ``rows`` of ``frame`` (tenant_id, site_id): (the rows
    where the rule is enabled, {name: one value when no tenant or site overrides the rule, else an array
    aligned with those rows}). For rules that work on numpy arrays of a batch's rows."""
    same = ctx.policy.uniform(rule)
    if same is not None:
        return (rows if same["enabled"] is not False else rows[:0]), {n: same[n] for n in names}
    at = with_params(ctx, rule, frame.select("tenant_id", "site_id")[rows].with_columns(_i=pl.Series(rows)), names)
    return at["_i"].to_numpy(), {n: at[n].to_numpy() for n in names}


def param_column(v: object, keep: np.ndarray | None = None) -> pl.Expr | pl.Series:
    """A parameter from :func:`row_params` as a column: a literal when one value holds for every row, else
    the rows' values (those where ``keep``)."""
    if isinstance(v, np.ndarray):
        return pl.Series(v if keep is None else v[keep])
    return pl.lit(v)


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
