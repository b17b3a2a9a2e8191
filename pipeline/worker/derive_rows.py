"""The rows the interval derivation writes: ``intervals_store`` and ``register_events_store``.

Both take lazy frames and collect once: on a busy worker every eager polars call gives up
the GIL and waits to get it back from the event loop, so fewer calls matter as much as less work.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import polars as pl
import pyarrow as pa

from pipeline.derive import cost_by_device
from pipeline.derive.localtime import utc_datetime
from pipeline.derive.pairs import ENGINE

_TS = pa.timestamp("ms", tz="UTC")
_DT = pl.Datetime("ms", "UTC")

INTERVALS = pa.schema(
    [
        ("tenant_id", pa.string()),
        ("site_id", pa.string()),
        ("device_id", pa.string()),
        ("quantity", pa.string()),
        ("interval_start", _TS),
        ("local_day", pa.date32()),
        ("role", pa.string()),
        ("measured", pa.float64()),
        ("estimated", pa.float64()),
        ("flags", pa.uint32()),
        ("n_readings", pa.uint32()),
        ("cost", pa.float64()),
        ("currency", pa.string()),
        ("computed_at", _TS),
    ]
)
EVENTS = pa.schema(
    [
        ("tenant_id", pa.string()),
        ("site_id", pa.string()),
        ("device_id", pa.string()),
        ("quantity", pa.string()),
        ("kind", pa.string()),
        ("ts", _TS),
        ("prev_ts", _TS),
        ("prev_value", pa.float64()),
        ("value", pa.float64()),
        ("delta", pa.float64()),
        ("cap", pa.float64()),
        ("computed_at", _TS),
    ]
)


def local_day(ts_ms: str, zones: Iterable[str]) -> pl.Expr:
    """The date of ``ts_ms`` (UTC epoch ms) in each row's ``timezone`` (null = UTC), one expression.

    Same values as :func:`pipeline.derive.local_fields`, without splitting the frame by zone.
    """
    tz = pl.col("timezone").fill_null("UTC")
    parts = [pl.when(tz == z).then(utc_datetime(ts_ms).dt.convert_time_zone(z).dt.date()) for z in sorted(zones)]
    return pl.coalesce([*parts, pl.when(tz == "UTC").then(utc_datetime(ts_ms).dt.date())])


def interval_rows(
    intervals: pl.LazyFrame, devices: pl.LazyFrame, zones: Iterable[str], tariffs: dict[str, tuple[Any, str]],
    now_ms: int,
) -> pa.Table:  # fmt: skip
    """``intervals`` (keys + interval columns) → ``intervals_store`` rows; ``devices``: site, zone, role."""
    frame = intervals.join(devices, on="device_id", how="left").with_columns(
        local_day=local_day("interval_start_ms", set(zones) - {"UTC"})
    )
    if tariffs:  # priced per device and tariff (rare: a registry names a tariff)
        priced = cost_by_device(frame.collect(engine=ENGINE), tariffs).lazy()
    else:
        priced = frame.with_columns(cost=pl.lit(None, pl.Float64), currency=pl.lit(None, pl.Utf8))
    rows = priced.select(
        "tenant_id",
        pl.col("site_id").fill_null(""),
        "device_id",
        "quantity",
        pl.col("interval_start_ms").cast(_DT).alias("interval_start"),
        "local_day",
        pl.col("role").fill_null(""),
        "measured",
        "estimated",
        "flags",
        "n_readings",
        "cost",
        pl.col("currency").fill_null(""),
        pl.lit(now_ms).cast(_DT).alias("computed_at"),
    )
    return rows.collect(engine=ENGINE).to_arrow().cast(INTERVALS)


def event_rows(events: pl.LazyFrame, devices: pl.LazyFrame, now_ms: int) -> pa.Table:
    """``events`` (keys + event columns) → ``register_events_store`` rows."""
    rows = events.join(devices.select("device_id", "site_id"), on="device_id", how="left").select(
        "tenant_id",
        pl.col("site_id").fill_null(""),
        "device_id",
        "quantity",
        "kind",
        pl.col("ts_ms").cast(_DT).alias("ts"),
        pl.col("prev_ts_ms").cast(_DT).alias("prev_ts"),
        "prev_value",
        "value",
        "delta",
        "cap",
        pl.lit(now_ms).cast(_DT).alias("computed_at"),
    )
    return rows.collect(engine=ENGINE).to_arrow().cast(EVENTS)
