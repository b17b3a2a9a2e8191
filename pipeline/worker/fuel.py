"""Generator fuel and runtime per 15-minute interval in the stream (``fuel_intervals_store``).

The same recipe as interval consumption (:mod:`pipeline.worker.derive`): the intervals of a
generator are a pure function of its stored samples of ``fuel_level``, ``engine_state`` and
``generator_runtime`` (:func:`pipeline.derive.fuel.generator_intervals`: level drops while
running are fuel used, rises are refuels, drops while stopped are unexplained), so each batch
recomputes the intervals its samples can change and overwrites them (ReplacingMergeTree,
newest ``computed_at`` wins). Arrival order does not matter.

The changed range of a generator spans its three series: from the interval of the last
level or runtime sample before the earliest new sample (each series' own predecessor, the
earliest of them) to the end of the interval holding the first sample after the latest new
one; a new engine state restates the level pairs up to the next state sample, or up to the
last level sample if none follows.

State: per generator, its samples of the last ``tail_ms`` plus the last one before that per
quantity, and since when that tail is complete. Context further back (late data, a
generator not seen yet, a restarted worker) is read from ClickHouse, up to ``lookback_ms``
before the batch. Only these three quantities are ever looked at, so the cost is the
generators' share of the readings.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from pipeline.catalogue import Catalogue
from pipeline.derive import generator_intervals, local_fields, params_frame, register_params
from pipeline.tenancy import Registry
from pipeline.worker.derive_state import SERIES, Fetch

LEVEL, STATE, RUNTIME = "fuel_level", "engine_state", "generator_runtime"
CODES = (LEVEL, STATE, RUNTIME)
DEV = ["tenant_id", "device_id"]
_SAMPLES = SERIES  # what a Fetch returns: stored readings with their source offsets
_TS = pa.timestamp("ms", tz="UTC")
_LITRES = ("used_l", "refuel_l", "unexplained_drop_l", "runtime_s", "runtime_estimated_s")
FUEL_INTERVALS = pa.schema([("tenant_id", pa.string()), ("site_id", pa.string()), ("device_id", pa.string()),
                            ("interval_start", _TS), ("local_day", pa.date32()),
                            *((n, pa.float64()) for n in _LITRES), ("n_readings", pa.uint32()),
                            ("computed_at", _TS)])  # fmt: skip


class FuelDeriver:
    def __init__(self, catalogue: Catalogue, registry: Registry, fetch: Fetch, *, tail_ms: int = 6 * 3_600_000,
                 lookback_ms: int = 2 * 86_400_000, interval_s: int = 900, refuel_min_l: float = 1.0,
                 noise_l: float = 0.5) -> None:  # fmt: skip
        self._catalogue = catalogue
        self._registry = registry
        self._fetch = fetch
        self._tail_ms = tail_ms
        self._lookback_ms = lookback_ms
        self._ims = interval_s * 1000
        self._fuel = {"interval_s": interval_s, "refuel_min_l": refuel_min_l, "noise_l": noise_l}
        self._tail = pl.DataFrame(schema=_SAMPLES)
        self._complete_from = pl.DataFrame(schema={"tenant_id": pl.Utf8, "device_id": pl.Utf8,
                                                   "complete_from": pl.Int64})  # fmt: skip

    @property
    def cached_samples(self) -> int:
        return self._tail.height

    def __call__(self, rows: pl.DataFrame, now_ms: int) -> dict[str, pa.Table]:
        """``rows``: accepted, tenant-tagged readings of one batch (any quantities)."""
        new = (rows.filter(pl.col("quantity").is_in(CODES))
               .select(*DEV, "quantity", "ts_ms", "value", pl.col("src_offset").cast(pl.Int64).alias("seq"))
               .cast(_SAMPLES))  # fmt: skip
        if new.is_empty():
            return {}
        span = new.group_by(DEV).agg(lo=pl.col("ts_ms").min(), hi=pl.col("ts_ms").max())
        known = self._tail.join(span.select(DEV), on=DEV)
        missing = self._insufficient(span, known)
        order = [*DEV, "quantity", "ts_ms"]
        context = (pl.concat([known, self._fetch_missing(missing), new])
                   .unique([*order, "seq"], keep="first").sort(order))  # fmt: skip
        ranges = self._ranges(span, new, context)
        of = {q: context.filter(pl.col("quantity") == q).drop("quantity") for q in CODES}
        params = {k: register_params(RUNTIME, self._registry.get(k[1]), self._catalogue)
                  for k in span.select(DEV).iter_rows()}  # fmt: skip
        result = generator_intervals(of[LEVEL], of[STATE], of[RUNTIME], keys=DEV,
                                     runtime_params=params_frame(params, DEV), **self._fuel)  # fmt: skip
        inside = pl.col("interval_start_ms").is_between(pl.col("start_ms"), pl.col("end_ms"), closed="left")
        intervals = result.intervals.join(ranges, on=DEV).filter(inside).drop("start_ms", "end_ms")
        self._remember(span, context, missing, new)
        return {"fuel_intervals_store": self._rows(intervals, now_ms)} if intervals.height else {}

    def _prev(self, span: pl.DataFrame, samples: pl.DataFrame) -> pl.DataFrame:
        """Per generator: the earliest of its level's and runtime's last sample before ``lo`` (else ``lo``)."""
        prev = (samples.filter(pl.col("quantity") != STATE).join(span, on=DEV).filter(pl.col("ts_ms") < pl.col("lo"))
                .group_by(*DEV, "quantity").agg(p=pl.col("ts_ms").max()))  # fmt: skip
        per_q = span.join(pl.DataFrame({"quantity": [LEVEL, RUNTIME]}), how="cross").join(
            prev, on=[*DEV, "quantity"], how="left"
        )
        return per_q.group_by(DEV).agg(prev=pl.coalesce("p", "lo").min())

    def _insufficient(self, span: pl.DataFrame, known: pl.DataFrame) -> pl.DataFrame:
        """Generators whose tail cannot supply the context (see IntervalDeriver._insufficient)."""
        ok = (span.join(self._prev(span, known), on=DEV).join(self._complete_from, on=DEV, how="left")
              .filter(pl.col("complete_from") <= pl.col("prev") // self._ims * self._ims).select(DEV))  # fmt: skip
        return span.join(ok, on=DEV, how="anti")

    def _fetch_missing(self, missing: pl.DataFrame) -> pl.DataFrame:
        if missing.is_empty():
            return pl.DataFrame(schema=_SAMPLES)
        since = int(missing["lo"].min()) - self._lookback_ms
        stored = self._fetch(missing["device_id"].unique().to_list(), list(CODES), since)
        return stored.select(list(_SAMPLES)).cast(_SAMPLES).join(missing.select(DEV), on=DEV)

    def _ranges(self, span: pl.DataFrame, new: pl.DataFrame, context: pl.DataFrame) -> pl.DataFrame:
        """Per generator ``start_ms``, ``end_ms``: the intervals the new samples can change.

        A new engine state changes the level pairs whose t1 (or, across a reading gap, t0) lies
        before the next state sample: up to the first level sample at or after that state, or
        up to the last level sample if no state follows.
        """
        ims, c = self._ims, pl.col
        after = (context.join(span, on=DEV).filter(c("ts_ms") > c("hi")).group_by(*DEV, "quantity")
                 .agg(n=c("ts_ms").min()))  # fmt: skip
        nxt = after.group_by(DEV).agg(nxt=c("n").max(), ns=c("n").filter(c("quantity") == STATE).first())
        levels = context.filter(c("quantity") == LEVEL).select(*DEV, "ts_ms")
        upto = (span.select(DEV).join(nxt.select(*DEV, "ns"), on=DEV, how="left").join(levels, on=DEV)
                .group_by(DEV).agg(past_ns=c("ts_ms").filter(c("ts_ms") >= c("ns")).min(),
                                   last_level=c("ts_ms").max()))  # fmt: skip
        new_state = new.filter(c("quantity") == STATE).select(DEV).unique().with_columns(new_state=pl.lit(True))
        state_end = pl.when(c("new_state").fill_null(False)).then(pl.coalesce("past_ns", "last_level"))
        return (span.join(self._prev(span, context), on=DEV).join(nxt, on=DEV, how="left")
                .join(upto, on=DEV, how="left").join(new_state, on=DEV, how="left")
                .select(*DEV, start_ms=c("prev") // ims * ims,
                        end_ms=pl.max_horizontal("hi", "nxt", state_end) // ims * ims + ims))  # fmt: skip

    def _remember(self, span: pl.DataFrame, context: pl.DataFrame, missing: pl.DataFrame, new: pl.DataFrame) -> None:
        """Keep the last ``tail_ms`` of every touched generator (+ the sample before, per quantity) and the
        batch's own samples (possibly not durable yet); record since when the tail is complete."""
        newest = context.group_by(DEV).agg(cut=pl.col("ts_ms").max() - self._tail_ms)
        marked = context.join(newest, on=DEV)
        recent = marked.filter(pl.col("ts_ms") >= pl.col("cut")).drop("cut")
        before = (marked.filter(pl.col("ts_ms") < pl.col("cut")).sort("ts_ms", "seq", descending=[False, True])
                  .group_by(*DEV, "quantity").agg(pl.all().last()))  # fmt: skip
        order = [*DEV, "quantity", "ts_ms"]
        kept = pl.concat([recent, before.select(recent.columns), new]).unique([*order, "seq"], keep="first").sort(order)
        fetched = missing.select(*DEV, fetched=pl.col("lo") - self._lookback_ms)
        cf = (span.select(DEV).join(self._complete_from, on=DEV, how="left").join(fetched, on=DEV, how="left")
              .join(newest, on=DEV).select(*DEV, complete_from=pl.max_horizontal(
                  pl.coalesce("fetched", "complete_from"), "cut").fill_null(0)))  # fmt: skip
        self._tail = pl.concat([self._tail.join(span.select(DEV), on=DEV, how="anti"), kept])
        self._complete_from = pl.concat([self._complete_from.join(span.select(DEV), on=DEV, how="anti"), cf])

    def _rows(self, intervals: pl.DataFrame, now_ms: int) -> pa.Table:
        regs = self._registry.lookup_many(intervals["device_id"].unique().to_list())
        attrs = pl.DataFrame({"device_id": list(regs), "site_id": [r.site_id for r in regs.values()],
                              "timezone": [r.timezone or "UTC" for r in regs.values()]},
                             schema={"device_id": pl.Utf8, "site_id": pl.Utf8, "timezone": pl.Utf8})  # fmt: skip
        frame = local_fields(intervals.join(attrs, on="device_id", how="left"), "interval_start_ms")
        dt = pl.Datetime("ms", "UTC")
        return (frame.with_columns(pl.col("interval_start_ms").cast(dt).alias("interval_start"),
                                   pl.col("site_id").fill_null(""), pl.lit(now_ms).cast(dt).alias("computed_at"))
                .select(FUEL_INTERVALS.names).to_arrow().cast(FUEL_INTERVALS))  # fmt: skip
