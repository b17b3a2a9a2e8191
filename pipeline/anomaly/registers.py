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

from collections.abc import Callable

import numpy as np
import polars as pl

from pipeline.anomaly.catalogue import RULES
from pipeline.anomaly.inputs import Context, MeterBatch
from pipeline.anomaly.meter_state import (
    DEVICE,
    Watermarks,
    finish,
    iso_expr,
    keep_relevant,
    merge_per_ts,
    param_column,
    relevant,
    row_params,
    with_message,
    with_params,
)
from pipeline.anomaly.model import Severity, empty_evaluations
from pipeline.anomaly.numbering import DID, QID, SID, rows_of
from pipeline.anomaly.series_state import SeriesLast, SeriesRing, each, same_reading
from pipeline.catalogue import Catalogue, Kind, load_catalogue

__all__ = ["Flatline", "ImplausibleJump", "NegativeDelta"]

_W = int(Severity.WARNING)
_REGISTERS = {"active_energy_import": 1.0, "active_energy_export": -1.0}  # register -> sign of active_power
_SERIES = [*DEVICE, "quantity"]
# Temperatures and humidity of idle equipment are legitimately constant at the sensor's resolution for an
# hour (a stopped generator's coolant at ambient): the stuck-signal test watches the electrical signals.
_STEADY_UNITS = {"degC", "%"}
# one part of flatline's evaluation: (rows of the batch, firing, valid, build(keep) -> evaluation rows)
_Part = tuple[np.ndarray, np.ndarray, np.ndarray, Callable[[np.ndarray], pl.DataFrame]]


def _c(name: str) -> pl.Expr:
    return pl.col(name)


class Flatline:
    def __init__(self, catalogue: Catalogue | None = None) -> None:
        self.spec = RULES["flatline"]
        cat = catalogue or load_catalogue()
        self._signals = sorted(c for c, q in cat.quantities.items()
                               if q.kind is Kind.INSTANTANEOUS and q.unit not in _STEADY_UNITS)  # fmt: skip
        self._units = {c: q.unit for c, q in cat.quantities.items()}
        self._registers = SeriesLast(SID, ["value", "power"])
        self._ring = SeriesRing(int(self.spec.params["samples"]) - 1)  # type: ignore[call-overload]

    def __call__(self, batch: MeterBatch, ctx: Context) -> pl.DataFrame:
        r = batch.readings.select(*_SERIES, "ts_ms", "value", DID, SID)
        parts = [p for p in (self._frozen_registers(batch, r, ctx), self._stuck_signals(batch, r, ctx)) if p]
        # relevant() over both parts at once: a device that fires in one keeps its quiet rows in the other
        fired = [d for rows, firing, _, _ in parts for d in r["device_id"].gather(rows[firing]).to_list()]
        frames = [build(valid & keep_relevant(ctx, self.spec.id, r["device_id"], rows, firing, fired))
                  for rows, firing, valid, build in parts]  # fmt: skip
        frames = [f for f in frames if f.height]
        if not frames:
            return empty_evaluations()
        rows = relevant(pl.concat(frames, how="diagonal_relaxed"), ctx, self.spec.id)
        return finish(merge_per_ts(rows), self.spec.id)

    # Both parts work on numbers (positions in the batch, series numbers, times, values) and return
    # (rows of the batch, firing, valid, build): build(keep) gathers the strings of the rows kept only,
    # with a lifecycle those relevant() keeps (keep_relevant), which on a quiet batch are none.

    def _frozen_registers(self, batch: MeterBatch, r: pl.DataFrame, ctx: Context) -> _Part | None:
        at, p = row_params(ctx, self.spec.id, r, rows_of(batch, _REGISTERS), ["power_threshold_w"])
        if not len(at):
            return None
        did, ts, value = r[DID].to_numpy(), r["ts_ms"].to_numpy(), r["value"].to_numpy()
        pw = same_reading(did, ts, rows_of(batch, ["active_power"]), at)  # the active power of each reading
        export = batch.quantities.get("active_energy_export", -1)
        sign = np.where(batch.readings[QID].to_numpy()[at] == export, -1.0, 1.0)  # export: power < 0
        power = np.where(pw >= 0, value[pw] * sign, np.nan)
        got, _, (v0, p0) = self._registers.advance(r[SID].to_numpy()[at], ts[at], [value[at], power])
        rows, v, now, thr = at[got], value[at[got]], power[got], each(p["power_threshold_w"], got)
        with np.errstate(invalid="ignore"):
            low = np.minimum(now, p0)  # NaN unless both readings have a power
            valid = ~np.isnan(v0) & ~np.isnan(low)
            firing = valid & (v == v0) & (low > thr)

        def build(keep: np.ndarray) -> pl.DataFrame:
            if not keep.any():
                return pl.DataFrame()
            out = r.select(*DEVICE, "quantity", "ts_ms", "value")[rows[keep]].with_columns(
                firing=pl.Series(firing[keep]), severity=pl.lit(_W), observed=pl.Series(low[keep]),
                threshold=pl.Series(np.asarray(thr, np.float64)[keep]),
            )  # fmt: skip
            return with_message(out, pl.format("{} register unchanged at {} while power >= {} W at {}", "quantity",
                                               "value", _c("observed").round(0), iso_expr("ts_ms")))  # fmt: skip

        return rows, firing, valid, build

    def _stuck_signals(self, batch: MeterBatch, r: pl.DataFrame, ctx: Context) -> _Part | None:
        """Samples with a full window (valid where hi is known)."""
        at, p = row_params(ctx, self.spec.id, r, rows_of(batch, self._signals), ["samples", "epsilon"])
        if not len(at):
            return None
        n, eps = np.maximum(p["samples"], 2), p["epsilon"]
        got, hi, lo = self._ring.roll(*(r[c].to_numpy()[at] for c in (SID, "ts_ms", "value")), n, eps)
        n, eps = (v[got] if isinstance(v, np.ndarray) else v for v in (n, eps))
        with np.errstate(invalid="ignore"):
            span = hi - lo
            firing = (span <= eps) & ((hi != 0) | (lo != 0))  # false where hi is NaN (fewer samples than n)
        rows = at[got]

        def build(keep: np.ndarray) -> pl.DataFrame:
            if not keep.any():
                return pl.DataFrame()
            out = r.select(*DEVICE, "quantity", "ts_ms")[rows[keep]].with_columns(
                hi=pl.Series(hi[keep]), samples=param_column(n, keep), firing=pl.Series(firing[keep]),
                severity=pl.lit(_W), observed=pl.Series(span[keep]), threshold=param_column(eps, keep).cast(pl.Float64),
            )  # fmt: skip
            unit = _c("quantity").replace_strict(self._units, default="")
            return with_message(out, pl.format("{} stuck at {} {} for the last {} readings (to {})", "quantity",
                                               "hi", unit, "samples", iso_expr("ts_ms")))  # fmt: skip

        return rows, firing, ~np.isnan(hi), build


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
