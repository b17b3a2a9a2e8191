"""Building blocks shared by the series computations (registers, fuel): de-duplication, the
pro-rata split of reading pairs over intervals, and reproducible float sums.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    from polars._typing import EngineType

__all__ = [
    "dedup_points",
    "dedup_readings",
    "readings_frame",
    "same_as_previous",
    "spread_pro_rata",
    "sum_canonically",
    "sum_in_order",
]

# small plans (one batch): polars 2's default streaming engine takes about twice as long on them
ENGINE: EngineType = "in-memory"


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
    df = df.sort([*grp, *seq, "_ord"], nulls_last=True).with_row_index("_row")
    # sorted: a group's first row is the kept one (cheaper than a window over the group)
    df = df.with_columns(_first=~same_as_previous(grp)).with_columns(
        _kept=_c("value").gather(pl.when(_c("_first")).then(_c("_row")).forward_fill())
    )
    conflicts = (
        df.filter(_c("value") != _c("_kept"))
        .group_by(grp, maintain_order=True)
        .agg(_c("_kept").first().alias("value"), (_c("value").first() - _c("_kept").first()).alias("delta"))
    )
    return df.filter(_c("_first")).select(*grp, "value"), conflicts


def same_as_previous(keys: Sequence[str]) -> pl.Expr:
    """True where the row has the same ``keys`` as the row before it (nulls equal): in a frame sorted by
    ``keys`` a vectorised stand-in for windows over them (``shift().over(keys)``), which cost far more."""
    return pl.all_horizontal([_c(k).eq_missing(_c(k).shift(1)) for k in keys])


def spread_pro_rata(pairs: pl.LazyFrame, interval_ms: int) -> tuple[pl.LazyFrame, pl.Expr]:
    """One row per (pair, interval [_s, _s + interval) it overlaps) and the pair's time share in it.

    The share is the overlap times ``1 / duration``, not a quotient: polars divides by a
    constant divisor as a product with its reciprocal, but exactly when a frame has one row,
    so a quotient's last bit would depend on how many pairs came together.
    """
    ims = interval_ms
    out = (pairs.with_columns(_i=pl.int_ranges(_c("t0") // ims, (_c("t1") - 1) // ims + 1)).explode("_i")
           .with_columns(_s=_c("_i") * ims))  # fmt: skip
    overlap = pl.min_horizontal("t1", _c("_s") + ims) - pl.max_horizontal("t0", "_s")
    return out, overlap * (1.0 / (_c("t1") - _c("t0")))


def sum_canonically(contrib: pl.DataFrame, group: list[str], values: list[str], *, flags: bool) -> pl.DataFrame:
    """Per group: sums of ``values`` (+ OR of ``flags``) and ``n`` summed as ``n_readings``.

    Float addition is not associative and polars' lazy engine may feed a group's rows in any
    order, so the rows are put in a canonical order (by value) in an eager frame first: the
    same set of contributions gives the same bits, which idempotent overwrites rely on.
    """
    aggs = [*(_c(v).sum() for v in values), *([_c("flags").bitwise_or()] if flags else []),
            _c("n").sum().alias("n_readings")]  # fmt: skip
    return contrib.sort([*group, *values]).group_by(group, maintain_order=True).agg(aggs).sort(group)


def dedup_points(readings: pl.DataFrame, keys: list[str], seq: list[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """:func:`dedup_readings` on a frame, with a shortcut for the usual case of no two readings at one ts."""
    grp = [*keys, "ts_ms"]
    df = (readings.lazy().select(*keys, _c("ts_ms").cast(pl.Int64), _c("value").cast(pl.Float64),
                                 *[_c(s).cast(pl.Int64) for s in seq])
          .sort(grp).with_columns(_dup=same_as_previous(grp)).collect(engine=ENGINE))  # fmt: skip
    if not df.get_column("_dup").to_numpy().any():
        points = df.select(*grp, "value")
        return points, points.clear().with_columns(delta=_c("value"))
    points, conflicts = pl.collect_all(list(dedup_readings(df.lazy().drop("_dup"), keys, seq)), engine=ENGINE)
    return points, conflicts


def sum_in_order(contrib: pl.LazyFrame, group: list[str], values: list[str]) -> pl.DataFrame:
    """Per group: ``values`` added one at a time in row order, plus the OR of ``flags`` and the sum of ``n``.

    The rows of each group must come in a fixed order of the contributions (e.g. by time; polars
    keeps the row order within groups). Like :func:`sum_canonically`, the same set of
    contributions then gives the same bits; unlike a value order, a time order lets a sum be
    continued: ``sum(a, b, c, d) == sum(sum(a, b), c, d)`` bit for bit, so a running total can
    stand in for the contributions it already holds (as the group's first row). Each group's
    values are gathered and added position by position, one expression per position over all
    groups (polars' group sums may add pairwise, and a window ``cum_sum`` is slow); two collects,
    so the calling thread gives up the GIL twice, not once per step.
    """
    aggs = [*values, _c("flags").bitwise_or(), _c("n").sum().alias("n_readings"), pl.len().alias("_len")]
    agg = contrib.group_by(group).agg(aggs).collect(engine=ENGINE)
    longest = int(agg.get_column("_len").to_numpy().max()) if agg.height else 0
    sums = []
    for v in values:
        total = _c(v).list.first().fill_null(0.0)  # nulls add nothing
        for k in range(1, longest):
            total = total + _c(v).list.get(k, null_on_oob=True).fill_null(0.0)
        sums.append(total.alias(v))
    return agg.select(*group, *sums, _c("flags").cast(pl.UInt32), _c("n_readings").cast(pl.UInt32))
