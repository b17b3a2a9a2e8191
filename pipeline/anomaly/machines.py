"""Machine rules: generators (``fuel_drop``, ``generator_unexpected_run``) and HVAC units
(``hvac_delta_t``, ``hvac_short_cycling``).

The channels of one reading (same device and time) are taken together, so a reading's
channels are expected in the same batch (they arrive in one message).

* ``fuel_drop`` (critical): over ``samples`` (8) consecutive fuel-level readings the engine
  was stopped (``engine_state`` 0 throughout and the runtime register not advancing, where
  reported) and mean(first half) − mean(second half) > threshold = ``threshold_l`` (3 L), or
  ``threshold_tank_ratio`` × tank capacity (2 %) if that is smaller. "Smaller" so that a
  small tank is protected too while a large one is not blinded: 2 % of a 990 L tank is
  19.8 L, and the half-means of a steady 20 L theft over 8 samples differ by only 10 L.
  Refuels are rises and never fire. One row per full window, at its last sample.
* ``generator_unexpected_run``: only for devices whose registration carries
  ``attributes.run_schedule`` (see :mod:`pipeline.anomaly.schedule`), read in the site's time
  zone. Per reading: running (runtime register advanced since the previous reading, else
  ``engine_state`` 1) outside the schedule fires. Unparsable schedules are not evaluated.
* ``hvac_delta_t``: cooling (``hvac_mode`` 2, or auto/unknown mode with return > supply)
  with the compressor on (``hvac_run_state`` 1): ΔT = return − supply air outside
  [min_delta_c, max_delta_c] for ``samples`` (5) consecutive readings. Heating is not
  evaluated (the band is a cooling band). One row per cooling-and-running reading.
* ``hvac_short_cycling``: per UTC hour, evaluated when complete: compressor starts
  (0 → 1) > ``max_starts_per_hour``, or at least two runs shorter than ``min_run_minutes``
  (first "on" reading to first "off" reading) ended in the hour. One short run alone (the
  thermostat was satisfied, the schedule ended) is not short cycling.
"""

from __future__ import annotations

import polars as pl

from pipeline.anomaly.catalogue import RULES
from pipeline.anomaly.inputs import Context, MeterBatch
from pipeline.anomaly.meter_state import (
    DEVICE,
    DeviceAttrs,
    SeriesTail,
    attribute,
    finish,
    full,
    iso_expr,
    lag,
    with_message,
    with_params,
)
from pipeline.anomaly.model import Severity, empty_evaluations
from pipeline.anomaly.numbering import DID, rows_of
from pipeline.anomaly.schedule import in_schedule, parse_schedule
from pipeline.anomaly.series_state import WindowAcc
from pipeline.derive.localtime import local_fields

__all__ = ["FuelDrop", "GeneratorUnexpectedRun", "HvacDeltaT", "HvacShortCycling"]

_W = int(Severity.WARNING)
HOUR_MS = 3_600_000


def _c(name: str) -> pl.Expr:
    return pl.col(name)


def _readings(batch: MeterBatch, codes: tuple[str, ...]) -> pl.DataFrame:
    """The batch's readings of quantities ``codes``."""
    return batch.readings[rows_of(batch, codes)]


def _wide(r: pl.DataFrame, codes: tuple[str, ...], required: str) -> pl.DataFrame:
    """One row per (device, ts) of readings ``r`` with a Float64 column per code (null if absent); rows
    with ``required``."""
    if r.is_empty():  # a fleet without such machines: no grouping (its fixed cost is per batch)
        return r.select(*DEVICE, "ts_ms").with_columns(pl.lit(None, pl.Float64).alias(q) for q in codes)
    aggs = [_c("value").filter(_c("quantity") == q).first().alias(q) for q in codes]
    return r.group_by(*DEVICE, "ts_ms").agg(aggs).filter(_c(required).is_not_null())


def _finish(parts: list[pl.DataFrame], rule: str) -> pl.DataFrame:
    return finish(pl.concat(parts, how="diagonal_relaxed"), rule) if parts else empty_evaluations()


def _schema(codes: tuple[str, ...], **extra: pl.DataType) -> dict[str, pl.DataType]:
    return {**{k: pl.Utf8() for k in DEVICE}, "ts_ms": pl.Int64(), **{q: pl.Float64() for q in codes}, **extra}


class FuelDrop:
    codes = ("fuel_level", "engine_state", "generator_runtime")

    def __init__(self) -> None:
        self.spec = RULES["fuel_drop"]
        self._attrs = DeviceAttrs({"tank": (pl.Float64(), lambda r, _: r.tank_capacity_l)})
        self._tail = SeriesTail(DEVICE, _schema(self.codes), int(self.spec.params["samples"]) - 1)  # type: ignore[call-overload]

    def __call__(self, batch: MeterBatch, ctx: Context) -> pl.DataFrame:
        wide = _wide(_readings(batch, self.codes), self.codes, "fuel_level")
        if wide.is_empty():
            return finish(wide, self.spec.id)
        params = ["samples", "threshold_l", "threshold_tank_ratio"]
        n_max = int(with_params(ctx, self.spec.id, wide.select("tenant_id", "site_id").unique(), params)["samples"]
                    .max() or 0)  # fmt: skip
        self._tail.n = max(self._tail.n, n_max - 1)
        context = self._tail.context(wide)
        self._tail.keep(context)
        context = with_params(ctx, self.spec.id, context, params)
        tank = self._attrs(ctx, context["device_id"])
        context = context.join(tank, on="device_id", how="left")
        out = []
        for (n,), part in context.partition_by("samples", as_dict=True).items():
            n, h = int(n), int(n) // 2  # type: ignore[call-overload]
            lvl, eng, rt = _c("fuel_level"), _c("engine_state"), _c("generator_runtime")
            w = part.with_columns(
                late=lvl.rolling_mean(h),
                early=lvl.rolling_mean(h).shift(n - h),
                eng_max=eng.rolling_max(n, min_samples=1),
                rt_span=rt.rolling_max(n, min_samples=1) - rt.rolling_min(n, min_samples=1),
            ).filter(_c("_new") & full(n))
            stopped = ((_c("eng_max") == 0).fill_null(True) & (_c("rt_span") == 0).fill_null(True)
                       & (_c("eng_max").is_not_null() | _c("rt_span").is_not_null()))  # fmt: skip
            limit = pl.min_horizontal(_c("threshold_l"), _c("threshold_tank_ratio") * _c("tank"))
            drop = _c("drop")
            rows = w.with_columns(limit=limit, stopped=stopped, drop=_c("early") - _c("late")).select(
                *DEVICE, "ts_ms", "early", "late", firing=_c("stopped") & (drop > _c("limit")),
                severity=pl.lit(int(self.spec.severity)), observed=drop, threshold="limit",
            )  # fmt: skip
            out.append(with_message(rows, pl.format(
                "fuel level fell {} L over {} readings while stopped (means {} -> {} L, threshold {} L) to {}",
                _c("observed").round(1), pl.lit(n), _c("early").round(1), _c("late").round(1),
                _c("threshold").round(1), iso_expr("ts_ms"))))  # fmt: skip
        return _finish(out, self.spec.id)


class GeneratorUnexpectedRun:
    codes = ("generator_runtime", "engine_state")

    def __init__(self) -> None:
        self.spec = RULES["generator_unexpected_run"]
        self._attrs = DeviceAttrs({"schedule": (pl.Utf8(), attribute("run_schedule")),
                                   "timezone": (pl.Utf8(), lambda g, _: g.timezone or "UTC")})  # fmt: skip
        self._tail = SeriesTail(DEVICE, _schema(self.codes), 1)

    def __call__(self, batch: MeterBatch, ctx: Context) -> pl.DataFrame:
        r = _readings(batch, self.codes)
        if r.is_empty():
            return finish(r, self.spec.id)
        sched = self._attrs(ctx, r["device_id"])
        valid = {}
        for s in sched["schedule"].drop_nulls().unique().to_list():
            try:
                valid[s] = parse_schedule(str(s))
            except ValueError:
                continue
        sched = sched.filter(_c("schedule").is_in(list(valid)))
        if sched.is_empty():
            return finish(sched, self.spec.id)
        wide = _wide(r.join(sched.select("device_id"), on="device_id", how="semi"), self.codes, "ts_ms")
        context = self._tail.context(wide)
        self._tail.keep(context)
        rt = _c("generator_runtime")
        pairs = context.with_columns(rt0=lag(rt)).filter(_c("_new"))
        running = (
            pl.when(rt.is_not_null() & _c("rt0").is_not_null()).then(rt > _c("rt0")).otherwise(_c("engine_state") == 1)
        )
        pairs = pairs.with_columns(running=running).filter(_c("running").is_not_null())  # unknown: not evaluated
        pairs = with_params(ctx, self.spec.id, pairs, [])
        pairs = local_fields(pairs.join(sched, on="device_id"), "ts_ms", day=None, weekday="wd", minute_of_day="mod")
        mow = (_c("wd").cast(pl.Int32) - 1) * 1440 + _c("mod")
        parts = []
        for (s,), part in pairs.partition_by("schedule", as_dict=True).items():
            inside = in_schedule(mow, valid[str(s)])
            rows = part.select(
                *DEVICE, "ts_ms", "timezone", "wd", "mod", firing=_c("running") & ~inside, severity=pl.lit(_W),
                observed=_c("running").cast(pl.Float64), threshold=pl.lit(0.0),
            )  # fmt: skip
            hhmm = pl.format("{}:{}", (_c("mod") // 60).cast(pl.Utf8).str.zfill(2),
                             (_c("mod") % 60).cast(pl.Utf8).str.zfill(2))  # fmt: skip
            parts.append(
                with_message(
                    rows,
                    pl.format(
                        "generator running at {} (day {} {} {}) outside the schedule {}",
                        iso_expr("ts_ms"),
                        "wd",
                        hhmm,
                        "timezone",
                        pl.lit(str(s)),
                    ),
                )
            )
        return _finish(parts, self.spec.id)


class HvacDeltaT:
    codes = ("hvac_supply_air_temp", "hvac_return_air_temp", "hvac_run_state", "hvac_mode")

    def __init__(self) -> None:
        self.spec = RULES["hvac_delta_t"]
        self._tail = SeriesTail(DEVICE, _schema(self.codes, out=pl.Boolean()), int(self.spec.params["samples"]) - 1)  # type: ignore[call-overload]

    def __call__(self, batch: MeterBatch, ctx: Context) -> pl.DataFrame:
        wide = _wide(_readings(batch, self.codes), self.codes, "ts_ms")
        if wide.is_empty():
            return finish(wide, self.spec.id)
        params = ["samples", "min_delta_c", "max_delta_c"]
        wide = with_params(ctx, self.spec.id, wide, params)
        sup, ret, mode = _c("hvac_supply_air_temp"), _c("hvac_return_air_temp"), _c("hvac_mode")
        cooling = (mode == 2) | (((mode == 3) | mode.is_null()) & (ret > sup))
        dt = ret - sup
        wide = wide.with_columns(
            evaluated=((_c("hvac_run_state") == 1) & cooling & dt.is_not_null()).fill_null(False), dt=dt
        ).with_columns(out=_c("evaluated") & ((_c("dt") < _c("min_delta_c")) | (_c("dt") > _c("max_delta_c"))))
        self._tail.n = max(self._tail.n, int(wide["samples"].max() or 1) - 1)  # type: ignore[arg-type]
        context = self._tail.context(wide)
        self._tail.keep(context)
        context = with_params(ctx, self.spec.id, context, params).with_columns(
            dt=ret - sup, evaluated=_c("out") | ((_c("hvac_run_state") == 1) & cooling & (ret - sup).is_not_null())
        )
        out = []
        for (n,), part in context.partition_by("samples", as_dict=True).items():
            n = int(n)  # type: ignore[call-overload]
            run = part.with_columns(k=pl.when(full(n)).then(_c("out").cast(pl.Int32).rolling_sum(n, min_samples=n)))
            run = run.filter(_c("_new") & _c("evaluated").fill_null(False))
            rows = run.select(
                *DEVICE, "ts_ms", "min_delta_c", "max_delta_c", firing=(_c("k") == n).fill_null(False),
                severity=pl.lit(_W), observed="dt",
                threshold=pl.when(_c("dt") < _c("min_delta_c")).then(_c("min_delta_c")).otherwise(_c("max_delta_c"))
                .cast(pl.Float64),
            )  # fmt: skip
            out.append(with_message(rows, pl.format(
                "return - supply air {} C outside {}-{} C for {} readings while cooling (to {})",
                _c("observed").round(1), "min_delta_c", "max_delta_c", pl.lit(n), iso_expr("ts_ms"))))  # fmt: skip
        return _finish(out, self.spec.id)


class HvacShortCycling:
    def __init__(self) -> None:
        self.spec = RULES["hvac_short_cycling"]
        schema = _schema(("hvac_run_state",), run_start=pl.Int64(), **{DID: pl.Int64()})
        self._tail = SeriesTail(DEVICE, schema, 1)
        self._hours = WindowAcc(["starts", "short", "n"], DEVICE, by=DID)

    def __call__(self, batch: MeterBatch, ctx: Context) -> pl.DataFrame:
        states = (_readings(batch, ("hvac_run_state",))
                  .select(*DEVICE, "ts_ms", DID, hvac_run_state="value", run_start=pl.lit(None, pl.Int64)))  # fmt: skip
        if states.is_empty():  # no run state, no hour completes (most batches of most fleets)
            return empty_evaluations()
        context = self._tail.context(states)
        s = _c("hvac_run_state")
        prev = lag(s)
        context = context.with_columns(start=(s == 1) & (prev == 0), end=(s == 0) & (prev == 1))
        # the start of the current run, carried forward within the series (-1: none known yet)
        seed = (pl.when(~_c("_new")).then(_c("run_start").fill_null(-1)).when(_c("start")).then(_c("ts_ms"))
                .when(lag(_c("ts_ms")).is_null()).then(-1))  # fmt: skip
        carried = seed.forward_fill()
        context = context.with_columns(run_start=pl.when(carried >= 0).then(carried))
        context = context.with_columns(began=lag(_c("run_start")))
        self._tail.keep(context)
        new = with_params(ctx, self.spec.id, context.filter(_c("_new")), ["min_run_minutes"])
        short = (_c("end") & ((_c("ts_ms") - _c("began")) < _c("min_run_minutes") * 60_000)).fill_null(False)
        done = self._hours.add(new.select(
            *DEVICE, "ts_ms", DID, width_ms=pl.lit(HOUR_MS, pl.Int64),
            starts=_c("start").fill_null(False).cast(pl.Float64), short=short.cast(pl.Float64), n=pl.lit(1.0),
        ))  # fmt: skip
        done = with_params(ctx, self.spec.id, done, ["max_starts_per_hour", "min_run_minutes"])
        rows = done.select(
            *DEVICE, "window_ms", "short", "min_run_minutes", ts_ms=_c("window_ms") + HOUR_MS,
            firing=(_c("starts") > _c("max_starts_per_hour")) | (_c("short") >= 2), severity=pl.lit(_W),
            observed="starts", threshold=_c("max_starts_per_hour").cast(pl.Float64),
        )  # fmt: skip
        rows = with_message(rows, pl.format("{} compressor starts and {} runs under {} min in the hour from {}",
                                            _c("observed").cast(pl.Int64), _c("short").cast(pl.Int64),
                                            "min_run_minutes", iso_expr("window_ms")))  # fmt: skip
        return finish(rows, self.spec.id)
