"""Building blocks shared by the series computations (registers, fuel): de-duplication, the
pro-rata split of reading pairs over intervals, and reproducible float sums.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import polars as pl

__all__ = ["dedup_readings", "readings_frame", "spread_pro_rata", "sum_canonically"]


def _c(name: str) -> pl.Expr:
    return pl.col(name)


def readings_frame(series: pl.DataFrame | Iterable[Sequence[float]]) -> pl.DataFrame:
    """``ts_ms, value[, seq]`` from a frame or from ``(ts_ms, value)`` / ``(ts_ms, value, seq)`` tuples."""
    if isinstance(series, pl.DataFrame):
        return series
    rows = [tuple(r) for r in series]
    if rows and len(rows[0]) == 3:
        return pl.DataFrame(rows, schema={"ts_ms": pl.Int64, "value": pl.Float64, "seq": pl.Int64}, orient="row")
    return pl.DataFrame(rows, schema={"ts_ms": pl.Int64, "value": pl.Float64}, orient="row")


def dedup_readings(readings: pl.LazyFrame, keys: list[str], seq: list[str]) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """``(points, conflicts)``: one row per keys + ts (the first in ``seq``, then row order), sorted;
    and per conflicting timestamp the kept ``value`` and ``delta`` = first differing value − kept."""
    df = readings.select(*keys, _c("ts_ms").cast(pl.Int64), _c("value").cast(pl.Float64),
                         *[_c(s).cast(pl.Int64) for s in seq]).with_row_index("_ord")  # fmt: skip
    grp = [*keys, "ts_ms"]
    df = df.sort([*grp, *seq, "_ord"], nulls_last=True).with_columns(_kept=_c("value").first().over(grp))
    conflicts = (
        df.filter(_c("value") != _c("_kept"))
        .group_by(grp, maintain_order=True)
        .agg(_c("_kept").first().alias("value"), (_c("value").first() - _c("_kept").first()).alias("delta"))
    )
    return df.unique(grp, keep="first", maintain_order=True).select(*grp, "value"), conflicts


def spread_pro_rata(pairs: pl.LazyFrame, interval_ms: int) -> tuple[pl.LazyFrame, pl.Expr]:
    """One row per (pair, interval [_s, _s + interval) it overlaps) and the pair's time share in it."""
    ims = interval_ms
    out = (pairs.with_columns(_i=pl.int_ranges(_c("t0") // ims, (_c("t1") - 1) // ims + 1)).explode("_i")
           .with_columns(_s=_c("_i") * ims))  # fmt: skip
    return out, (pl.min_horizontal("t1", _c("_s") + ims) - pl.max_horizontal("t0", "_s")) / (_c("t1") - _c("t0"))


def sum_canonically(contrib: pl.DataFrame, group: list[str], values: list[str], *, flags: bool) -> pl.DataFrame:
    """Per group: sums of ``values`` (+ OR of ``flags``) and ``n`` summed as ``n_readings``.

    Float addition is not associative and polars' lazy engine may feed a group's rows in any
    order, so the rows are put in a canonical order (by value) in an eager frame first: the
    same set of contributions gives the same bits, which idempotent overwrites rely on.
    """
    aggs = [*(_c(v).sum() for v in values), *([_c("flags").bitwise_or()] if flags else []),
            _c("n").sum().alias("n_readings")]  # fmt: skip
    return contrib.sort([*group, *values]).group_by(group, maintain_order=True).agg(aggs).sort(group)
