"""Local calendar fields of UTC epoch-ms columns, per row time zone.

Polars converts time zones with a constant zone per expression, so frames are
split by their ``timezone`` column, converted part by part and put back in the
original row order. All functions are pure and keep every input column.
"""

from __future__ import annotations

import polars as pl

__all__ = ["HOUR_MS", "local_fields", "utc_datetime"]

HOUR_MS = 3_600_000
_ROW = "__localtime_row"


def utc_datetime(col: str) -> pl.Expr:
    """Epoch-ms Int64 column → ``Datetime("ms", "UTC")``."""
    return pl.from_epoch(pl.col(col), time_unit="ms").dt.cast_time_unit("ms").dt.replace_time_zone("UTC")


def local_fields(
    frame: pl.DataFrame,
    ts_col: str,
    *,
    tz_col: str = "timezone",
    default_tz: str = "UTC",
    day: str | None = "local_day",
    weekday: str | None = None,
    minute_of_day: str | None = None,
) -> pl.DataFrame:
    """Add local date (``Date``), ISO weekday (1 = Monday) and minute of the day of ``ts_col``.

    The zone of each row is ``tz_col`` (IANA name) if the frame has it, else
    ``default_tz``; a null zone means ``default_tz``. Unknown zone names raise
    polars' ``ComputeError``.
    """
    if frame.is_empty():
        extra = {day: pl.Date, weekday: pl.Int8, minute_of_day: pl.Int32}
        return frame.with_columns([pl.lit(None, dtype=t).alias(n) for n, t in extra.items() if n])
    if tz_col in frame.columns:
        work = frame.with_row_index(_ROW).with_columns(pl.col(tz_col).fill_null(default_tz).alias("__localtime_tz"))
    else:
        work = frame.with_row_index(_ROW).with_columns(pl.lit(default_tz).alias("__localtime_tz"))
    parts = []
    for (tz,), part in work.partition_by("__localtime_tz", as_dict=True).items():
        local = utc_datetime(ts_col).dt.convert_time_zone(str(tz))
        cols = []
        if day:
            cols.append(local.dt.date().alias(day))
        if weekday:
            cols.append(local.dt.weekday().cast(pl.Int8).alias(weekday))
        if minute_of_day:
            cols.append((local.dt.hour().cast(pl.Int32) * 60 + local.dt.minute().cast(pl.Int32)).alias(minute_of_day))
        parts.append(part.with_columns(cols))
    return pl.concat(parts).sort(_ROW).drop(_ROW, "__localtime_tz")
