"""Power-quality rules: voltage and frequency bands (10-min windows), low power factor (hourly).

Windows are UTC-aligned; a series' window is evaluated once, when a later reading of the
series (in a later window) shows it is complete. One evaluation row per (device, window), at the
window end; the three voltage phases are merged (the worst phase speaks).

Nominal values: an explicit policy override (a value different from the catalogue default)
wins; otherwise the registry's ``nominal_voltage`` / ``nominal_frequency``; otherwise the
default. For a 60 Hz site the default frequency band moves with the nominal (59.5–60.5 Hz
warning, 57–62 Hz critical).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from pipeline.anomaly.catalogue import RULES
from pipeline.anomaly.inputs import Context, MeterBatch
from pipeline.anomaly.meter_state import (
    DEVICE,
    DeviceAttrs,
    field,
    finish,
    iso_expr,
    merge_per_ts,
    relevant,
    row_params,
    with_message,
    with_params,
)
from pipeline.anomaly.model import Severity
from pipeline.anomaly.numbering import SID, rows_of
from pipeline.anomaly.series_state import WindowAcc

__all__ = ["FrequencyOutOfBand", "LowPowerFactor", "VoltageOutOfBand"]

_W, _C = int(Severity.WARNING), int(Severity.CRITICAL)
PHASES = ("voltage_l1", "voltage_l2", "voltage_l3")


def _c(name: str) -> pl.Expr:
    return pl.col(name)


def _cmp() -> pl.Expr:
    return pl.when(_c("observed") < _c("threshold")).then(pl.lit("<")).otherwise(pl.lit(">"))


def _nominal(param: str, registry_col: str, rule: str) -> pl.Expr:
    """Policy value if overridden, else the registry's, else the catalogue default."""
    default = float(RULES[rule].params[param])  # type: ignore[arg-type]
    return pl.when(_c(param) != default).then(_c(param)).otherwise(pl.coalesce(registry_col, param))


class _Windowed:
    """Mean of quantities per device over UTC windows, evaluated once each window is complete."""

    rule = ""
    quantities: tuple[str, ...] = ()
    width_params: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.spec = RULES[self.rule]
        self._acc = WindowAcc(["s", "n"], [])

    def _width(self, params: dict[str, Any]) -> int | np.ndarray:
        """Window width(s) in ms, from the rule's ``width_params`` (one value, or one per row)."""
        return 3_600_000

    def _value(self, value: np.ndarray) -> np.ndarray:
        return value

    def _window_means(self, batch: MeterBatch, ctx: Context, params: Sequence[str]) -> pl.DataFrame:
        """Complete windows: DEVICE, quantity, window_ms, width_ms, mean + ``params``. Folds numbers only; the
        keys of a window are gathered from the batch when it completes (its first reading in the batch)."""
        r = batch.readings
        at, p = row_params(ctx, self.rule, r, rows_of(batch, self.quantities), self.width_params)
        width = np.broadcast_to(np.asarray(self._width(p), np.int64), at.shape)
        value = self._value(r["value"].to_numpy()[at].astype(np.float64))
        pos, win, width, acc = self._acc.fold(r[SID].to_numpy()[at], r["ts_ms"].to_numpy()[at], width,
                                              [value, np.ones(len(at))])  # fmt: skip
        if not len(pos):
            return pl.DataFrame()
        means = r.select(*DEVICE, "quantity")[at[pos]].with_columns(
            window_ms=pl.Series(win), width_ms=pl.Series(width), mean=pl.Series(acc[:, 0] / acc[:, 1])
        )
        return with_params(ctx, self.rule, means, params)


class _Banded(_Windowed):
    """Windows of the rule's ``window_minutes`` (the voltage and frequency bands)."""

    width_params = ("window_minutes",)

    def _width(self, params: dict[str, Any]) -> int | np.ndarray:
        return (np.asarray(params["window_minutes"]) * 60_000).astype(np.int64)


class VoltageOutOfBand(_Banded):
    """10-min mean phase voltage outside ±10 % of nominal (warning); below −15 % or above +10 % critical."""

    rule = "voltage_out_of_band"
    quantities = PHASES
    _params = ("window_minutes", "nominal_v", "warning_low", "warning_high", "critical_low", "critical_high")

    def __init__(self) -> None:
        super().__init__()
        self._attrs = DeviceAttrs({"reg_nominal": (pl.Float64(), field("nominal_voltage"))})

    def __call__(self, batch: MeterBatch, ctx: Context) -> pl.DataFrame:
        w = self._window_means(batch, ctx, self._params)
        if w.is_empty():
            return finish(w, self.rule)
        reg = self._attrs(ctx, w["device_id"])
        w = w.join(reg, on="device_id", how="left").with_columns(nom=_nominal("nominal_v", "reg_nominal", self.rule))
        m, nom = _c("mean"), _c("nom")
        lo_w, hi_w = nom * (1 - _c("warning_low")), nom * (1 + _c("warning_high"))
        lo_c, hi_c = nom * (1 - _c("critical_low")), nom * (1 + _c("critical_high"))
        crit, warn = (m < lo_c) | (m > hi_c), (m < lo_w) | (m > hi_w)
        sev = pl.when(crit).then(_C).when(warn).then(_W).otherwise(0)
        bound = (pl.when(m < lo_c).then(lo_c).when(m > hi_c).then(hi_c).when(m < lo_w).then(lo_w)
                 .when(m > hi_w).then(hi_w).when(m < nom).then(lo_w).otherwise(hi_w))  # fmt: skip
        rows = w.with_columns(sev=sev, threshold=bound).select(
            *DEVICE, "quantity", "window_ms", "window_minutes", "nom", ts_ms=_c("window_ms") + _c("width_ms"),
            firing=_c("sev") > 0, severity=pl.when(_c("sev") > 0).then(_c("sev")).otherwise(_W), observed=m,
            threshold="threshold",
        )  # fmt: skip
        rows = relevant(rows, ctx, self.rule)
        rows = with_message(rows, pl.format("{}-min mean {} {} V {} {} V (nominal {} V) from {}", "window_minutes",
                                            "quantity", _c("observed").round(1), _cmp(), _c("threshold").round(1),
                                            _c("nom").round(0), iso_expr("window_ms")))  # fmt: skip
        return finish(merge_per_ts(rows), self.rule)


class FrequencyOutOfBand(_Banded):
    """10-min mean frequency outside 49.5–50.5 Hz (warning) or 47–52 Hz (critical), shifted for 60 Hz sites."""

    rule = "frequency_out_of_band"
    quantities = ("frequency",)
    _bands = ("warning_low_hz", "warning_high_hz", "critical_low_hz", "critical_high_hz")
    _params = ("window_minutes", *_bands)

    def __init__(self) -> None:
        super().__init__()
        self._attrs = DeviceAttrs({"nom": (pl.Float64(), field("nominal_frequency"))})

    def __call__(self, batch: MeterBatch, ctx: Context) -> pl.DataFrame:
        w = self._window_means(batch, ctx, self._params)
        if w.is_empty():
            return finish(w, self.rule)
        reg = self._attrs(ctx, w["device_id"])
        w = w.join(reg, on="device_id", how="left").with_columns(shift=(_c("nom").fill_null(50.0) - 50.0))
        defaults = RULES[self.rule].params
        w = w.with_columns(
            pl.when(_c(b) == float(defaults[b])).then(_c(b) + _c("shift")).otherwise(_c(b)).alias(b)  # type: ignore[arg-type]
            for b in self._bands
        )
        m = _c("mean")
        lo_w, hi_w, lo_c, hi_c = (_c(b) for b in self._bands)
        sev = pl.when((m < lo_c) | (m > hi_c)).then(_C).when((m < lo_w) | (m > hi_w)).then(_W).otherwise(0)
        bound = (pl.when(m < lo_c).then(lo_c).when(m > hi_c).then(hi_c).when(m < lo_w).then(lo_w)
                 .when(m > hi_w).then(hi_w).when(m < (lo_w + hi_w) / 2).then(lo_w).otherwise(hi_w))  # fmt: skip
        rows = w.with_columns(sev=sev, threshold=bound).select(
            *DEVICE, "window_ms", "window_minutes", ts_ms=_c("window_ms") + _c("width_ms"), firing=_c("sev") > 0,
            severity=pl.when(_c("sev") > 0).then(_c("sev")).otherwise(_W), observed=m, threshold="threshold",
        )  # fmt: skip
        rows = relevant(rows, ctx, self.rule)
        rows = with_message(rows, pl.format("{}-min mean frequency {} Hz {} {} Hz from {}", "window_minutes",
                                            _c("observed").round(3), _cmp(), _c("threshold").round(2),
                                            iso_expr("window_ms")))  # fmt: skip
        return finish(rows, self.rule)


class LowPowerFactor(_Windowed):
    """Hourly (UTC) mean |power factor| below the threshold (0.9)."""

    rule = "low_power_factor"
    quantities = ("power_factor",)

    def _value(self, value: np.ndarray) -> np.ndarray:
        return np.abs(value)  # the sign says import/export (or leading), not the quality

    def __call__(self, batch: MeterBatch, ctx: Context) -> pl.DataFrame:
        w = self._window_means(batch, ctx, ["threshold"])
        if w.is_empty():
            return finish(w, self.rule)
        m = _c("mean")
        rows = w.select(
            *DEVICE, "window_ms", ts_ms=_c("window_ms") + _c("width_ms"), firing=m < _c("threshold"),
            severity=pl.lit(_W), observed=m, threshold="threshold",
        )  # fmt: skip
        rows = relevant(rows, ctx, self.rule)
        rows = with_message(rows, pl.format("hourly mean power factor {} < {} from {}", _c("observed").round(3),
                                            "threshold", iso_expr("window_ms")))  # fmt: skip
        return finish(rows, self.rule)
