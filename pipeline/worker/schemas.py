"""Arrow schemas of the tables the worker writes, and frame → Arrow conversion.

Column names and types match ``sql/``; a mismatch fails loudly at insert time.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

TS = pa.timestamp("ms", tz="UTC")

READINGS = pa.schema(
    [
        ("tenant_id", pa.string()),
        ("site_id", pa.string()),
        ("branch", pa.string()),
        ("device_id", pa.string()),
        ("quantity", pa.string()),
        ("ts", TS),
        ("value", pa.float64()),
        ("flags", pa.uint32()),
        ("quality", pa.int32()),
        ("gateway_id", pa.string()),
        ("src_topic", pa.string()),
        ("src_partition", pa.uint16()),
        ("src_offset", pa.uint64()),
    ]
)

SIM_USAGE = pa.schema(
    [
        ("tenant_id", pa.string()),
        ("site_id", pa.string()),
        ("sim_id", pa.string()),
        ("imei_id", pa.string()),
        ("period_start", TS),
        ("period_end", TS),
        ("bytes_up", pa.uint64()),
        ("bytes_down", pa.uint64()),
        ("sms_mo", pa.uint32()),
        ("sms_mt", pa.uint32()),
        ("voice_seconds", pa.uint32()),
        ("csd_seconds", pa.uint32()),
        ("sessions", pa.uint32()),
        ("mcc", pa.string()),
        ("mnc", pa.string()),
        ("home_mcc", pa.string()),
        ("home_mnc", pa.string()),
        ("roaming", pa.uint8()),
        ("rat", pa.string()),
        ("plan_id", pa.string()),
        ("flags", pa.uint32()),
        ("src_topic", pa.string()),
        ("src_partition", pa.uint16()),
        ("src_offset", pa.uint64()),
    ]
)

SIM_IDENTITY = pa.schema(
    [
        ("tenant_id", pa.string()),
        ("sim_id", pa.string()),
        ("iccid", pa.string()),
        ("imsi", pa.string()),
        ("msisdn", pa.string()),
        ("imei", pa.string()),
        ("last_seen", TS),
    ]
)

REGISTRY = pa.schema(
    [
        ("tenant_id", pa.string()),
        ("site_id", pa.string()),
        ("branch", pa.string()),
        ("subject_id", pa.string()),
        ("subject_type", pa.string()),
        ("kind", pa.string()),
        ("timezone", pa.string()),
        ("gateway_id", pa.string()),
        ("sim_id", pa.string()),
        ("attributes", pa.string()),
        ("deleted", pa.uint8()),
        ("version", pa.uint64()),
        ("updated_at", TS),
    ]
)

_PL_TS = pl.Datetime("ms", "UTC")


def _to_arrow(frame: pl.DataFrame, schema: pa.Schema) -> pa.Table:
    return frame.select([f.name for f in schema]).to_arrow().cast(schema)


def readings_table(rows: pl.DataFrame) -> pa.Table:
    if rows.height == 0:
        return READINGS.empty_table()
    return _to_arrow(
        rows.with_columns(
            pl.col("ts_ms").cast(_PL_TS).alias("ts"),
            pl.col("quality").fill_null(0),
            pl.col("gateway_id").fill_null(""),
            pl.col("branch").fill_null(""),
        ),
        READINGS,
    )


def sim_usage_table(rows: pl.DataFrame) -> pa.Table:
    return _to_arrow(
        rows.with_columns(
            pl.col("period_start_ms").cast(_PL_TS).alias("period_start"),
            pl.col("period_end_ms").cast(_PL_TS).alias("period_end"),
            pl.col("roaming").cast(pl.UInt8),
            pl.col("plan_id").fill_null(""),
        ),
        SIM_USAGE,
    )


def sim_identity_table(rows: pl.DataFrame) -> pa.Table:
    return _to_arrow(
        rows.with_columns(
            pl.col("imei").fill_null(""),
            pl.col("period_end_ms").cast(_PL_TS).alias("last_seen"),
        ),
        SIM_IDENTITY,
    )


def registry_table(rows: list[dict]) -> pa.Table:
    if not rows:
        return REGISTRY.empty_table()
    return pa.Table.from_pylist(rows, schema=REGISTRY)
