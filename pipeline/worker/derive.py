"""Interval consumption in the stream: recompute every interval a batch can change, overwrite it.

Intervals are a pure function of the stored readings of a series (see
:mod:`pipeline.derive.windowing`), so the result never depends on arrival order:
a late reading recomputes the intervals around it and the new rows replace the
old ones (``intervals_store`` is a ReplacingMergeTree on the interval key,
newest ``computed_at`` wins).

Two paths, one computation (:func:`pipeline.derive.compute_intervals_many`, one call per batch):

* **in order** (every new reading of a series after its last stored one, the normal case): the
  context is the series' last reading plus the new ones, and the open interval's running totals
  seed that interval (:class:`~pipeline.worker.derive_state.SeriesState`). Its sums add
  contributions in time order, so continuing them gives the same bits as recomputing them.
* **otherwise** (a series not seen yet, late or re-delivered readings): the stored readings are
  read back (:class:`~pipeline.worker.derive_state.StoredReadings`, one read per batch, up to
  ``lookback_ms`` before the batch, on a connection of its own) and the affected range is
  recomputed from them (:mod:`pipeline.derive.windowing`).

Both leave the series' last reading and open-interval totals in the state. The state assumes
that this deriver sees every reading of its series that gets stored (one deriver per series).
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from pipeline.catalogue import Catalogue
from pipeline.derive import IntervalResult, IntervalRules, affected_ranges, compute_intervals_many, window_many
from pipeline.derive.pairs import ENGINE
from pipeline.storage import Database
from pipeline.tenancy import Registry
from pipeline.worker.derive_facts import DeriveFacts
from pipeline.worker.derive_rows import EVENTS, INTERVALS, event_rows, interval_rows
from pipeline.worker.derive_state import KEYS, SERIES, STATE, TOTALS, Fetch, SeriesState, StoredReadings, last_points

__all__ = ["EVENTS", "INTERVALS", "KEYS", "Fetch", "IntervalDeriver", "clickhouse_fetch"]

_READING = ["sid", "ts_ms", "value", "seq"]


class IntervalDeriver:
    def __init__(
        self,
        catalogue: Catalogue,
        registry: Registry,
        fetch: Fetch,
        *,
        lookback_ms: int = 2 * 86_400_000,
        rules: IntervalRules | None = None,
    ) -> None:
        self._cumulative = catalogue.cumulative_codes()
        self._rules = rules or IntervalRules()
        self._ims = self._rules.interval_s * 1000
        self._facts = DeriveFacts(catalogue, registry)
        self._state = SeriesState()
        self._stored = StoredReadings(fetch, lookback_ms=lookback_ms)
        self.reads = 0  # batches that read stored readings back (for tests and profiles)

    @property
    def series(self) -> int:
        """Series with state (last reading and open-interval totals)."""
        return len(self._state)

    def __call__(self, rows: pl.DataFrame, now_ms: int) -> dict[str, pa.Table]:
        """``rows``: accepted, tenant-tagged readings of one batch (any quantities).

        Lazy plans collected a few at a time: every eager polars call hands the GIL back and
        forth with the event loop (see :mod:`pipeline.worker.derive_rows`).
        """
        lazy_new = (rows.lazy().filter(pl.col("quantity").is_in(self._cumulative))
                    .select(*KEYS, "ts_ms", "value", pl.col("src_offset").cast(pl.Int64).alias("seq")))  # fmt: skip
        spans = lazy_new.group_by(KEYS).agg(lo=pl.col("ts_ms").min(), hi=pl.col("ts_ms").max())
        new, series = pl.collect_all([lazy_new, self._state.identify(spans)], engine=ENGINE)
        if new.is_empty():
            return {}
        self._stored.begin(now_ms)
        if series.get_column("sid").null_count():
            series = self._state.assign(series)
        devices = series.get_column("device_id")
        self._facts.refresh(devices)
        in_order, other = self._state.split(series)
        keyed = new.lazy().join(series.lazy().select(*KEYS, "sid"), on=KEYS).select(_READING)
        fast = self._in_order(in_order.lazy(), keyed)
        params, replacements = self._facts.params(series.lazy())
        keyed, missing, *fast_params = pl.collect_all(
            [keyed, self._facts.missing(series.lazy()), *fast, params, replacements], engine=ENGINE
        )
        if not missing.is_empty():
            self._facts.add(missing)
            fast_params[3:] = pl.collect_all(list(self._facts.params(series.lazy())), engine=ENGINE)
        ctx, ranges, seeds, params, replacements = fast_params
        slow_all, slow_ctx, slow_ranges = self._recompute(other, keyed)
        result = compute_intervals_many(pl.concat([ctx, slow_ctx]), params, keys=["sid"], seeds=seeds,
                                        replacements=replacements, ranges=pl.concat([ranges, slow_ranges]),
                                        rules=self._rules)  # fmt: skip
        names = series.lazy().select("sid", *KEYS)
        out = {"intervals_store": interval_rows(result.intervals.lazy().join(names, on="sid"), self._facts.devices(),
                                                self._facts.zones, self._facts.tariffs(devices), now_ms)}  # fmt: skip
        if result.events.height:
            out["register_events_store"] = event_rows(result.events.lazy().join(names, on="sid"),
                                                      self._facts.devices(), now_ms)  # fmt: skip
        self._remember(pl.concat([ctx, slow_all]), other, result)
        self._stored.add(now_ms, new)
        return out

    def _in_order(self, in_order: pl.LazyFrame, new: pl.LazyFrame) -> list[pl.LazyFrame]:
        """Context (last reading + new ones), ranges and open-interval seeds of in-order series."""
        last = in_order.select("sid", ts_ms="last_ts", value="last_value", seq="last_seq")
        ctx = pl.concat([last, new.join(in_order.select("sid"), on="sid")])
        ranges = in_order.select("sid", start_ms="open_start", end_ms=pl.col("hi") // self._ims * self._ims + self._ims)
        # the context's first reading (the last stored one) is counted again, so its seed holds one reading less
        seeds = in_order.select("sid", interval_start_ms="open_start", measured="measured", estimated="estimated",
                                flags="flags", n_readings=pl.col("n_readings") - 1)  # fmt: skip
        return [ctx, ranges, seeds]

    def _recompute(self, other: pl.DataFrame, new: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
        """(stored + new readings, the window to recompute, its ranges) of series that read back."""
        if other.is_empty():
            none = new.clear()
            return none, none, other.select("sid", start_ms="lo", end_ms="hi")
        self.reads += 1
        stored = self._stored.read(other).select(_READING)
        fresh = new.join(other.select("sid"), on="sid")
        everything = pl.concat([stored, fresh]).unique(["sid", "ts_ms", "seq"], keep="first").sort("sid", "ts_ms")
        ranges = affected_ranges(fresh, everything, ["sid"], self._rules.interval_s)
        return everything, window_many(everything, ranges, ["sid"]), ranges

    def _remember(self, readings: pl.DataFrame, other: pl.DataFrame, result: IntervalResult) -> None:
        """New state of every touched series: its last reading and the totals of the interval holding it.

        Those totals are in the result unless a late reading left that interval alone; then the
        state still holds them, or (a series read back without state) the series stays without.
        """
        ims, at = self._ims, ["sid", "open_start"]
        last = last_points(readings.lazy()).with_columns(open_start=pl.col("last_ts") // ims * ims)
        totals = result.intervals.lazy().select("sid", pl.col("interval_start_ms").alias("open_start"), *TOTALS)
        fresh = last.join(totals, on=at, how="inner")
        before = self._state.get(other).lazy().select(*at, *TOTALS)
        kept = last.join(fresh.select("sid"), on="sid", how="anti").join(before, on=at)
        rows = pl.concat([fresh.select(list(STATE)), kept.select(list(STATE))]).collect(engine=ENGINE)
        self._state.replace(rows, drop=other)


def clickhouse_fetch(db: Database) -> Fetch:
    """Read stored readings of the given devices/quantities since ``since_ms`` (current values, FINAL).

    Through a connection of its own (:meth:`~pipeline.storage.Database.reader`, opened here, not
    in a batch): the read runs while the sink inserts the previous batch instead of waiting for it.
    """
    reader = db.reader()

    def fetch(devices: list[str], quantities: list[str], since_ms: int) -> pl.DataFrame:
        table = reader.query_arrow(
            f"SELECT tenant_id, device_id, quantity, toUnixTimestamp64Milli(ts) AS ts_ms, value, "
            f"toInt64(src_offset) AS seq FROM {db.table('readings_store')} FINAL "
            "WHERE device_id IN {d:Array(String)} AND quantity IN {q:Array(String)} "
            "AND ts >= fromUnixTimestamp64Milli({s:Int64})",
            parameters={"d": devices, "q": quantities, "s": since_ms},
        )
        return pl.from_arrow(table) if table.num_rows else pl.DataFrame(schema=SERIES)  # type: ignore[return-value]

    return fetch
