"""Register rules: ``flatline`` (frozen register or stuck signal) and the register events
``negative_delta`` (reset, not a rollover) and ``implausible_jump`` (delta above rated power × time).

``flatline`` fires per sample when

* an energy register did not move between two consecutive readings while the active power
  at both readings was above ``power_threshold_w`` (import: ``active_power``; export:
  ``-active_power``) – a meter whose display is frozen; or
* an instantaneous signal (catalogue kind ``instantaneous``; not temperatures or humidity,
  which idle equipment legitimately holds constant at the sensor's resolution) spanned at
  most ``epsilon`` over its last ``samples`` readings, unless all of them were exactly 0
  (no load, not a stuck sensor).

Each sample where either test could be made is one evaluation row (parts merged per device
and time). The event rules read the register events the derive stage computed for the batch
(``MeterBatch.events``) and emit firing rows only, each event once.
"""

from __future__ import annotations

import polars as pl

from pipeline.anomaly.catalogue import RULES
from pipeline.anomaly.inputs import Context, MeterBatch
from pipeline.anomaly.meter_state import (
    DEVICE,
    SeriesLast,
    SeriesRing,
    Watermarks,
    finish,
    iso_expr,
    merge_per_ts,
    relevant,
    with_message,
    with_params,
)
from pipeline.anomaly.model import Severity, empty_evaluations
from pipeline.catalogue import Catalogue, Kind, load_catalogue

__all__ = ["Flatline", "ImplausibleJump", "NegativeDelta"]

_W = int(Severity.WARNING)
_REGISTERS = {"active_energy_import": 1.0, "active_energy_export": -1.0}  # register -> sign of active_power
_SERIES = [*DEVICE, "quantity"]
# Temperatures and humidity of idle equipment are legitimately constant at the sensor's resolution for an
# hour (a stopped generator's coolant at ambient): the stuck-signal test watches the electrical signals.
_STEADY_UNITS = {"degC", "%"}


def _c(name: str) -> pl.Expr:
    return pl.col(name)


class Flatline:
    def __init__(self, catalogue: Catalogue | None = None) -> None:
        self.spec = RULES["flatline"]
        cat = catalogue or load_catalogue()
        self._signals = sorted(c for c, q in cat.quantities.items()
                               if q.kind is Kind.INSTANTANEOUS and q.unit not in _STEADY_UNITS)  # fmt: skip
        self._units = {c: q.unit for c, q in cat.quantities.items()}
        self._registers = SeriesLast(["device_id", "quantity"], ["value", "power"])
        self._ring = SeriesRing(["device_id", "quantity"], int(self.spec.params["samples"]) - 1)  # type: ignore[call-overload]

    def __call__(self, batch: MeterBatch, ctx: Context) -> pl.DataFrame:
        r = batch.readings.select(*_SERIES, "ts_ms", "value")
        parts = [p for p in (self._frozen_registers(r, ctx), self._stuck_signals(r, ctx)) if p.height]
        if not parts:
            return empty_evaluations()
        rows = relevant(pl.concat(parts, how="diagonal_relaxed"), ctx, self.spec.id)
        return finish(merge_per_ts(rows), self.spec.id)

    def _frozen_registers(self, r: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        regs = r.filter(_c("quantity").is_in(list(_REGISTERS)))
        if regs.is_empty():
            return regs
        power = (r.filter(_c("quantity") == "active_power").unique([*DEVICE, "ts_ms"], keep="first")
                 .select(*DEVICE, "ts_ms", p=_c("value")))  # fmt: skip
        sign = _c("quantity").replace_strict(_REGISTERS, return_dtype=pl.Float64)
        regs = regs.join(power, on=[*DEVICE, "ts_ms"], how="left").with_columns(power=_c("p") * sign).drop("p")
        pairs = self._registers.step(regs).rename({"prev_value": "v0", "prev_power": "p0"})
        pairs = pairs.filter(pl.all_horizontal(_c(k).is_not_null() for k in ("v0", "power", "p0")))
        pairs = with_params(ctx, self.spec.id, pairs, ["power_threshold_w"])
        rows = pairs.with_columns(low=pl.min_horizontal("power", "p0")).select(
            *DEVICE, "quantity", "ts_ms", "value",
            firing=(_c("value") == _c("v0")) & (_c("low") > _c("power_threshold_w")),
            severity=pl.lit(_W), observed="low", threshold=_c("power_threshold_w").cast(pl.Float64),
        )  # fmt: skip
        return with_message(rows, pl.format("{} register unchanged at {} while power >= {} W at {}", "quantity",
                                            "value", _c("observed").round(0), iso_expr("ts_ms")))  # fmt: skip

    def _stuck_signals(self, r: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        sig = with_params(ctx, self.spec.id, r.filter(_c("quantity").is_in(self._signals)), ["samples", "epsilon"])
        if sig.is_empty():
            return sig
        sig = sig.with_columns(_c("samples").clip(lower_bound=2))
        rows, hi, lo = self._ring.roll(sig, "samples", tol="epsilon")
        rows = rows.with_columns(hi=pl.Series(hi), lo=pl.Series(lo)).filter(_c("hi").is_not_nan())
        span = _c("hi") - _c("lo")
        rows = rows.select(
            *DEVICE, "quantity", "ts_ms", "hi", "samples",
            firing=(span <= _c("epsilon")) & ((_c("hi") != 0) | (_c("lo") != 0)),
            severity=pl.lit(_W), observed=span, threshold=_c("epsilon").cast(pl.Float64),
        )  # fmt: skip
        unit = _c("quantity").replace_strict(self._units, default="")
        return with_message(rows, pl.format("{} stuck at {} {} for the last {} readings (to {})", "quantity", "hi",
                                            unit, "samples", iso_expr("ts_ms")))  # fmt: skip


class _RegisterEvent:
    """Firing rows for derived register events of one kind, each (series, ts) once."""

    kind = ""
    rule = ""

    def __init__(self) -> None:
        self.spec = RULES[self.rule]
        self._marks = Watermarks(_SERIES)

    def __call__(self, batch: MeterBatch, ctx: Context) -> pl.DataFrame:
        ev = batch.events
        if ev.is_empty():
            return finish(ev, self.rule)
        ev = ev.filter(_c("kind") == self.kind).select(*_SERIES, "ts_ms", "prev_ts_ms", "prev_value", "value",
                                                         "delta", "cap")  # fmt: skip
        if ev.is_empty():
            return finish(ev, self.rule)
        marks = self._marks.advance(ev)
        ev = ev.join(marks.select(*_SERIES, "prev"), on=_SERIES).filter(
            _c("prev").is_null() | (_c("ts_ms") > _c("prev"))
        )
        ev = with_params(ctx, self.rule, ev.unique([*_SERIES, "ts_ms"], keep="first").sort("ts_ms"), [])
        return finish(merge_per_ts(self._rows(ev)), self.rule)

    def _rows(self, ev: pl.DataFrame) -> pl.DataFrame:
        raise NotImplementedError


class NegativeDelta(_RegisterEvent):
    kind, rule = "reset", "negative_delta"

    def _rows(self, ev: pl.DataFrame) -> pl.DataFrame:
        return ev.rechunk().select(
            *DEVICE, "ts_ms", firing=pl.lit(True), severity=pl.lit(int(self.spec.severity)),
            observed=_c("value") - _c("prev_value"), threshold=pl.lit(0.0),
            message=pl.format("{} register went backwards {} -> {} at {} (not a rollover)", "quantity",
                              "prev_value", "value", iso_expr("ts_ms")),
        )  # fmt: skip


class ImplausibleJump(_RegisterEvent):
    kind, rule = "implausible_jump", "implausible_jump"

    def _rows(self, ev: pl.DataFrame) -> pl.DataFrame:
        return ev.rechunk().select(
            *DEVICE, "ts_ms", firing=pl.lit(True), severity=pl.lit(int(self.spec.severity)),
            observed="delta", threshold="cap",
            message=pl.format("{} advanced {} in {} s, above the rated maximum {} (at {})", "quantity",
                              _c("delta").round(3), ((_c("ts_ms") - _c("prev_ts_ms")) / 1000).round(0),
                              _c("cap").round(3), iso_expr("ts_ms")),
        )  # fmt: skip
