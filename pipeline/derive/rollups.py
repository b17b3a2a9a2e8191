"""Hourly (UTC) and daily (registry time zone) rollups per device, site and tenant.

Pure polars over interval frames (:mod:`pipeline.derive.intervals`, optionally priced by
:mod:`pipeline.derive.tariffs`) and over raw instantaneous readings. Consumption keeps
``measured`` and ``estimated`` apart. The local day of a row is its ``local_day`` column
if present, else the date of the interval start in the row's ``timezone`` (the device's
registry zone; UTC if absent): a site's and a tenant's day is the union of their devices'
local days. Site and tenant consumption skips rows whose ``role`` is ``"sub"`` (a
sub-meter is already inside its main meter) when the frame has a ``role`` column.

The same numbers come from the ClickHouse views in ``sql/008_consumption_views.sql``; these
functions are the reference they are tested against and what reports and the demo use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import polars as pl

from pipeline.catalogue import Catalogue, Kind
from pipeline.derive.localtime import local_fields, utc_datetime
from pipeline.flags import Flag
from pipeline.tenancy.registry import Registration

__all__ = ["LEVELS", "attach_registry", "consumption_rollup", "instantaneous_codes", "instantaneous_intervals",
           "instantaneous_rollup"]  # fmt: skip

Period = Literal["hour", "day"]
Level = Literal["device", "site", "tenant"]
LEVELS: dict[str, list[str]] = {"device": ["tenant_id", "site_id", "device_id"], "site": ["tenant_id", "site_id"],
                                "tenant": ["tenant_id"]}  # fmt: skip


def attach_registry(frame: pl.DataFrame, registrations: Mapping[str, Registration]) -> pl.DataFrame:
    """Add ``tenant_id``, ``site_id``, ``timezone`` and ``role`` (registry attribute) by ``device_id``."""
    rows = [(d, r.tenant_id, r.site_id, r.timezone, str((r.record.get("attributes") or {}).get("role", "")))
            for d, r in registrations.items()]  # fmt: skip
    reg = pl.DataFrame(rows, schema=["device_id", "tenant_id", "site_id", "timezone", "role"], orient="row")
    have = [c for c in reg.columns[1:] if c in frame.columns]
    return frame.drop(have).join(reg, on="device_id", how="left")


def _period(frame: pl.DataFrame, ts_col: str, period: Period) -> tuple[pl.DataFrame, str]:
    if period == "hour":
        return frame.with_columns(hour=utc_datetime(ts_col).dt.truncate("1h")), "hour"
    if "local_day" in frame.columns:
        return frame.rename({"local_day": "day"}), "day"
    return local_fields(frame, ts_col, day="day"), "day"


def _level_rows(frame: pl.DataFrame, level: Level) -> pl.DataFrame:
    if level != "device" and "role" in frame.columns:
        return frame.filter(pl.col("role").fill_null("") != "sub")
    return frame


def consumption_rollup(intervals: pl.DataFrame, *, period: Period, level: Level) -> pl.DataFrame:
    """Sums of intervals: keys of ``level`` + ``quantity`` + ``hour`` (UTC Datetime) or ``day`` (local Date).

    Columns: measured, estimated, total, flags (OR), intervals, estimated_intervals
    (intervals with an estimated share) and, if the input is priced, cost and currency
    (cost is null and currency ``"MIXED"`` when a group mixes currencies).
    """
    keys = LEVELS[level]
    frame, pcol = _period(_level_rows(intervals, level), "interval_start_ms", period)
    aggs = [pl.col("measured").sum(), pl.col("estimated").sum(),
            (pl.col("measured") + pl.col("estimated")).sum().alias("total"), pl.col("flags").bitwise_or(),
            pl.len().cast(pl.UInt32).alias("intervals"),
            ((pl.col("estimated") > 0) | ((pl.col("flags") & int(Flag.ESTIMATED)) > 0)).sum().cast(pl.UInt32)
            .alias("estimated_intervals")]  # fmt: skip
    if "cost" in frame.columns:
        cur = pl.col("currency").drop_nulls()
        mixed = cur.n_unique() > 1
        aggs += [
            pl.when(mixed | (pl.col("cost").count() == 0)).then(None).otherwise(pl.col("cost").sum()).alias("cost"),
            pl.when(mixed).then(pl.lit("MIXED")).otherwise(cur.first()).alias("currency"),
        ]
    return frame.group_by([*keys, "quantity", pcol]).agg(aggs).sort([*keys, "quantity", pcol])


def instantaneous_codes(catalogue: Catalogue) -> list[str]:
    """Catalogue codes whose min/avg/max are rolled up (instantaneous quantities and levels)."""
    return sorted(c for c, q in catalogue.quantities.items() if q.kind in (Kind.INSTANTANEOUS, Kind.LEVEL))


def instantaneous_intervals(readings: pl.DataFrame, *, interval_s: int = 900,
                            keys: Sequence[str] = ("tenant_id", "site_id", "device_id")) -> pl.DataFrame:  # fmt: skip
    """15-minute statistics of instantaneous readings: keys + quantity + interval_start_ms +
    ``min``, ``max``, ``sum``, ``n`` (and ``timezone`` if given). Readings are de-duplicated on
    (keys, quantity, ts): the first row wins (arrival order), as for registers.
    """
    ims = interval_s * 1000
    extra = [c for c in ("timezone", "role") if c in readings.columns]
    group = [*keys, "quantity", *extra]
    return (readings.unique([*keys, "quantity", "ts_ms"], keep="first", maintain_order=True)
            .with_columns(interval_start_ms=pl.col("ts_ms") // ims * ims)
            .group_by([*group, "interval_start_ms"])
            .agg(pl.col("value").min().alias("min"), pl.col("value").max().alias("max"),
                 pl.col("value").sum().alias("sum"), pl.len().cast(pl.UInt32).alias("n"))
            .sort([*group, "interval_start_ms"]))  # fmt: skip


def instantaneous_rollup(stats_or_readings: pl.DataFrame, *, period: Period, level: Level) -> pl.DataFrame:
    """min / avg / max / n per ``level`` keys + ``quantity`` + ``hour`` or ``day``.

    Input: raw readings (``ts_ms``, ``value``) or the output of :func:`instantaneous_intervals`;
    ``avg`` is the mean of all readings in the group (over devices for sites and tenants).
    """
    stats = stats_or_readings
    if "value" in stats.columns:
        stats = instantaneous_intervals(stats)
    keys = LEVELS[level]
    frame, pcol = _period(stats, "interval_start_ms", period)
    return (frame.group_by([*keys, "quantity", pcol])
            .agg(pl.col("min").min(), (pl.col("sum").sum() / pl.col("n").sum()).alias("avg"), pl.col("max").max(),
                 pl.col("n").sum())
            .sort([*keys, "quantity", pcol]))  # fmt: skip
