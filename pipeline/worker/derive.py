"""Interval consumption in the stream: recompute every interval a batch can change, overwrite it.

Intervals are a pure function of the stored readings of a series (see
:mod:`pipeline.derive.windowing`), so the result never depends on arrival order:
a late reading recomputes the intervals around it and the new rows replace the
old ones (``intervals_store`` is a ReplacingMergeTree on the interval key,
newest ``computed_at`` wins).

State: per series (tenant, device, cumulative quantity) the readings of the last
``tail_ms`` and the time ``complete_from`` since which the tail holds every
stored reading. A batch whose context reaches further back (late data, a new
series, a restarted worker) reads the readings it needs from ClickHouse, up to
``lookback_ms`` before the batch; an older predecessor is treated as absent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polars as pl
import pyarrow as pa

from pipeline.catalogue import Catalogue
from pipeline.derive import (
    IntervalRules,
    affected_ranges,
    compute_intervals_many,
    cost_by_device,
    local_fields,
    params_frame,
    register_params,
    replacements_frame,
    window_many,
)
from pipeline.tenancy import Registry

KEYS = ["tenant_id", "device_id", "quantity"]
_SERIES = {"tenant_id": pl.Utf8, "device_id": pl.Utf8, "quantity": pl.Utf8, "ts_ms": pl.Int64,
           "value": pl.Float64, "seq": pl.Int64}  # fmt: skip
_TS = pa.timestamp("ms", tz="UTC")

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

# Fetch stored readings: (device ids, quantities, lower bound ms) → frame with _SERIES columns
Fetch = Callable[[list[str], list[str], int], pl.DataFrame]


class IntervalDeriver:
    def __init__(
        self,
        catalogue: Catalogue,
        registry: Registry,
        fetch: Fetch,
        *,
        tail_ms: int = 6 * 3_600_000,
        lookback_ms: int = 2 * 86_400_000,
        rules: IntervalRules | None = None,
    ) -> None:
        self._catalogue = catalogue
        self._cumulative = catalogue.cumulative_codes()
        self._registry = registry
        self._fetch = fetch
        self._tail_ms = tail_ms
        self._lookback_ms = lookback_ms
        self._rules = rules or IntervalRules()
        self._interval_ms = self._rules.interval_s * 1000
        self._tail = pl.DataFrame(schema=_SERIES)
        self._complete_from = pl.DataFrame(schema={**{k: pl.Utf8 for k in KEYS}, "complete_from": pl.Int64})

    @property
    def cached_readings(self) -> int:
        return self._tail.height

    def __call__(self, rows: pl.DataFrame, now_ms: int) -> dict[str, pa.Table]:
        """``rows``: accepted, tenant-tagged readings of one batch (any quantities)."""
        new = (rows.filter(pl.col("quantity").is_in(self._cumulative))
               .select(*KEYS, "ts_ms", "value", pl.col("src_offset").cast(pl.Int64).alias("seq")))  # fmt: skip
        if new.is_empty():
            return {}
        series = new.group_by(KEYS).agg(lo=pl.col("ts_ms").min())
        known = self._tail.join(series.select(KEYS), on=KEYS)
        missing = self._insufficient(series, known)
        fetched = self._fetch_missing(missing)
        context = pl.concat([known, fetched, new]).unique([*KEYS, "ts_ms", "seq"], keep="first").sort([*KEYS, "ts_ms"])
        ranges = affected_ranges(new, context, KEYS, self._rules.interval_s)
        window = window_many(context, ranges, KEYS)
        params = {k: register_params(k[2], self._registry.get(k[1]), self._catalogue)
                  for k in series.select(KEYS).iter_rows()}  # fmt: skip
        result = compute_intervals_many(window, params_frame(params, KEYS), keys=KEYS,
                                        replacements=replacements_frame(params, KEYS), ranges=ranges,
                                        rules=self._rules)  # fmt: skip
        self._remember(series, context, missing, new)
        out = {"intervals_store": self._interval_rows(result.intervals, now_ms)}
        if result.events.height:
            out["register_events_store"] = self._event_rows(result.events, now_ms)
        return out

    def _insufficient(self, series: pl.DataFrame, known: pl.DataFrame) -> pl.DataFrame:
        """Series whose tail cannot supply the context of the new readings.

        The tail of a series holds every stored reading at or after ``complete_from`` and the
        last one before it (or none exists within the lookback). The context starts at the
        interval of the last reading before the batch (``p``), so the tail suffices when
        ``complete_from <= floor(p)``.
        """
        ims = self._interval_ms
        prev = (
            known.join(series, on=KEYS)
            .filter(pl.col("ts_ms") < pl.col("lo"))
            .group_by(KEYS)
            .agg(prev=pl.col("ts_ms").max())
        )
        ok = (series.join(prev, on=KEYS, how="left").join(self._complete_from, on=KEYS, how="left")
              .filter(pl.col("complete_from") <= pl.coalesce("prev", "lo") // ims * ims).select(KEYS))  # fmt: skip
        return series.join(ok, on=KEYS, how="anti")

    def _fetch_missing(self, missing: pl.DataFrame) -> pl.DataFrame:
        if missing.is_empty():
            return pl.DataFrame(schema=_SERIES)
        since = int(missing["lo"].min()) - self._lookback_ms
        stored = self._fetch(missing["device_id"].unique().to_list(), missing["quantity"].unique().to_list(), since)
        return stored.select(list(_SERIES)).cast(_SERIES).join(missing.select(KEYS), on=KEYS)

    def _remember(self, series: pl.DataFrame, context: pl.DataFrame, missing: pl.DataFrame, new: pl.DataFrame) -> None:
        """Keep the last ``tail_ms`` of every touched series; record since when the tail is complete.

        The batch's own readings stay in the tail even when older than that: the sink may still
        be writing them while the next batch is derived (one batch persists while the next is
        prepared), so ClickHouse cannot supply them yet. They are trimmed the next time the
        series is touched, when they are durable.
        """
        newest = context.group_by(KEYS).agg(cut=pl.col("ts_ms").max() - self._tail_ms)
        marked = context.join(newest, on=KEYS)
        recent = marked.filter(pl.col("ts_ms") >= pl.col("cut")).drop("cut")
        # the last reading before the cut stays too: it is the context of the oldest kept interval
        before = marked.filter(pl.col("ts_ms") < pl.col("cut")).group_by(KEYS).agg(pl.all().sort_by("ts_ms").last())
        kept = (pl.concat([recent, before.select(recent.columns), new])
                .unique([*KEYS, "ts_ms", "seq"], keep="first").sort([*KEYS, "ts_ms"]))  # fmt: skip
        fetched_from = missing.select(*KEYS, fetched=pl.col("lo") - self._lookback_ms)
        cf = (
            series.select(KEYS)
            .join(self._complete_from, on=KEYS, how="left")
            .join(fetched_from, on=KEYS, how="left")
            .join(newest, on=KEYS)
            .select(*KEYS, complete_from=pl.max_horizontal(pl.coalesce("fetched", "complete_from"), "cut"))
        )  # a series seen before and neither fetched now nor trimmed keeps its complete_from
        self._tail = pl.concat([self._tail.join(series.select(KEYS), on=KEYS, how="anti"), kept])
        self._complete_from = pl.concat([self._complete_from.join(series.select(KEYS), on=KEYS, how="anti"),
                                         cf.with_columns(pl.col("complete_from").fill_null(0))])  # fmt: skip

    def _device_attrs(self, devices: list[str]) -> pl.DataFrame:
        regs = self._registry.lookup_many(devices)
        return pl.DataFrame(
            {
                "device_id": list(regs),
                "site_id": [r.site_id for r in regs.values()],
                "timezone": [r.timezone or "UTC" for r in regs.values()],
                "role": [str((r.record.get("attributes") or {}).get("role", "")) for r in regs.values()],
            },
            schema={"device_id": pl.Utf8, "site_id": pl.Utf8, "timezone": pl.Utf8, "role": pl.Utf8},
        )

    def _interval_rows(self, intervals: pl.DataFrame, now_ms: int) -> pa.Table:
        devices = intervals["device_id"].unique().to_list()
        attrs = self._device_attrs(devices)
        tariffs: dict[str, tuple[Any, str]] = {}
        for dev, reg in self._registry.lookup_many(devices).items():
            if reg.record.get("tariff"):
                tariffs[dev] = (reg.record["tariff"], reg.timezone or "UTC")
        frame = local_fields(intervals.join(attrs, on="device_id", how="left"), "interval_start_ms")
        frame = (
            cost_by_device(frame, tariffs)
            if tariffs
            else frame.with_columns(cost=pl.lit(None, pl.Float64), currency=pl.lit(None, pl.Utf8))
        )
        return (
            frame.with_columns(
                pl.col("interval_start_ms").cast(pl.Datetime("ms", "UTC")).alias("interval_start"),
                pl.col("site_id").fill_null(""),
                pl.col("role").fill_null(""),
                pl.col("currency").fill_null(""),
                pl.lit(now_ms).cast(pl.Datetime("ms", "UTC")).alias("computed_at"),
            )
            .select(INTERVALS.names)
            .to_arrow()
            .cast(INTERVALS)
        )

    def _event_rows(self, events: pl.DataFrame, now_ms: int) -> pa.Table:
        attrs = self._device_attrs(events["device_id"].unique().to_list()).select("device_id", "site_id")
        dt = pl.Datetime("ms", "UTC")
        return (
            events.join(attrs, on="device_id", how="left")
            .with_columns(
                pl.col("site_id").fill_null(""),
                pl.col("ts_ms").cast(dt).alias("ts"),
                pl.col("prev_ts_ms").cast(dt).alias("prev_ts"),
                pl.lit(now_ms).cast(dt).alias("computed_at"),
            )
            .select(EVENTS.names)
            .to_arrow()
            .cast(EVENTS)
        )


def clickhouse_fetch(db: Any) -> Fetch:
    """Read stored readings of the given devices/quantities since ``since_ms`` (current values, FINAL)."""

    def fetch(devices: list[str], quantities: list[str], since_ms: int) -> pl.DataFrame:
        table = db.query_arrow(
            f"SELECT tenant_id, device_id, quantity, toUnixTimestamp64Milli(ts) AS ts_ms, value, "
            f"toInt64(src_offset) AS seq FROM {db.table('readings_store')} FINAL "
            "WHERE device_id IN {d:Array(String)} AND quantity IN {q:Array(String)} "
            "AND ts >= fromUnixTimestamp64Milli({s:Int64})",
            parameters={"d": devices, "q": quantities, "s": since_ms},
        )
        return pl.from_arrow(table) if table.num_rows else pl.DataFrame(schema=_SERIES)  # type: ignore[return-value]

    return fetch
