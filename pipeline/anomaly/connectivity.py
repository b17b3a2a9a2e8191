"""Reporting rules: ``gap`` (no reading for too long) and ``clock_invalid`` (device clock not trusted).

``gap`` is detected in event time when the device's next reading arrives after the hole:
the hole (prev, next) is longer than ``period_factor`` × the expected period, which is the
registry's ``expected_period_s`` of the device (else the policy's ``default_period_s``) or
its gateway's, if longer: readings arrive in the gateway's uploads, so a 5-min meter behind
a 15-min gateway is heard from every 15 min, and one upload delivered late is not a gap.
It emits two firing rows, at the first and the last missed reading (prev + period and
next − period, device period), so the episode's first_seen/last_seen span the gap, and a
non-firing row at every reading, so the alert clears ``clear_after`` readings after the
device resumed. The message carries ``gap_start=<last reading before> gap_end=<resumed
reading>`` (ISO UTC) for gap attribution. Readings older than the device's newest are
ignored (late data filling a hole afterwards changes nothing).

``clock_invalid`` is an event rule: one firing row per reading whose flags carry the DLMS
clock status bits (CLOCK_INVALID, CLOCK_DOUBTFUL) or whose time is more than
``future_tolerance_s`` ahead of the batch's wall clock.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from pipeline.anomaly.catalogue import RULES
from pipeline.anomaly.inputs import Context, MeterBatch
from pipeline.anomaly.meter_state import (
    DEVICE,
    DeviceFloats,
    finish,
    iso_expr,
    keep_relevant,
    param_column,
    relevant,
    row_params,
    with_params,
)
from pipeline.anomaly.model import Severity, empty_evaluations
from pipeline.anomaly.numbering import DID
from pipeline.anomaly.series_state import SeriesLast
from pipeline.flags import Flag
from pipeline.tenancy.registry import Registration

__all__ = ["ClockInvalid", "Gap"]

_CLOCK_BITS = int(Flag.CLOCK_INVALID | Flag.CLOCK_DOUBTFUL)


def _c(name: str) -> pl.Expr:
    return pl.col(name)


def _upload_period(reg: Registration, ctx: Context) -> float | None:
    gw = ctx.registry.get(reg.gateway_id) if reg.gateway_id else None
    return float(gw.expected_period_s) if gw is not None and gw.expected_period_s else None


class Gap:
    def __init__(self) -> None:
        self.spec = RULES["gap"]
        self._last = SeriesLast(DID)
        self._periods = DeviceFloats(lambda r, _: r.expected_period_s, _upload_period)

    def __call__(self, batch: MeterBatch, ctx: Context) -> pl.DataFrame:
        r = batch.readings
        did, ts = r[DID].to_numpy(), r["ts_ms"].to_numpy()
        # a reading's channels are adjacent rows: keep one (cheap); the step drops other repeated times
        one = np.flatnonzero(np.r_[True, (did[1:] != did[:-1]) | (ts[1:] != ts[:-1])]) if len(did) else did
        at, p = row_params(ctx, self.spec.id, r, one, ["period_factor", "default_period_s"])
        if not len(at):
            return empty_evaluations()
        pairs = self._last.step(pl.DataFrame({DID: did[at], "ts_ms": ts[at], "_i": at}).with_columns(
            factor=param_column(p["period_factor"]), default=param_column(p["default_period_s"])))  # fmt: skip
        rows = pairs["_i"].to_numpy()
        own, upload = self._periods(ctx, r, rows)
        own = np.where(np.isnan(own), pairs["default"].to_numpy().astype(np.float64), own)
        limit = (pairs["factor"].to_numpy() * np.fmax(own, upload) * 1000).astype(np.int64)
        prev = pairs["prev_ts"]
        gap = (prev.is_not_null() & (pairs["ts_ms"] - prev.fill_null(0) > pl.Series(limit))).to_numpy()
        keep = keep_relevant(ctx, self.spec.id, r["device_id"], rows, gap)
        if not keep.any():  # a quiet batch
            return empty_evaluations()
        pairs = r.select(*DEVICE)[rows[keep]].hstack(pairs.filter(pl.Series(keep)).select("ts_ms", prev="prev_ts"))
        period = pl.Series((own[keep] * 1000).astype(np.int64))
        pairs = pairs.with_columns(period=period, limit=pl.Series(limit[keep]), hole=_c("ts_ms") - _c("prev"))
        rows = pairs.select(*DEVICE, "ts_ms", "prev", "period", "hole", severity=pl.lit(int(Severity.WARNING)),
                            observed=(_c("hole") / 1000).fill_null(0.0), threshold=_c("limit") / 1000,
                            gap=(_c("prev").is_not_null() & (_c("hole") > _c("limit"))))  # fmt: skip
        gaps = rows.filter(_c("gap")).rechunk().with_columns(
            firing=pl.lit(True), resumed=_c("ts_ms"),
            message=pl.format("no reading for {} h (> {} min): gap_start={} gap_end={}",
                              (_c("hole") / 3_600_000).round(2), (_c("threshold") / 60).round(1), iso_expr("prev"),
                              iso_expr("ts_ms")),
        )  # fmt: skip
        first = gaps.with_columns(ts_ms=_c("prev") + _c("period"))
        last = gaps.filter(_c("hole") > 2 * _c("period")).with_columns(ts_ms=_c("resumed") - _c("period"))
        ok = rows.with_columns(firing=pl.lit(False), message=pl.lit(""))
        return finish(relevant(pl.concat([first, last, ok], how="diagonal_relaxed"), ctx, self.spec.id), self.spec.id)


class ClockInvalid:
    def __init__(self) -> None:
        self.spec = RULES["clock_invalid"]

    def __call__(self, batch: MeterBatch, ctx: Context) -> pl.DataFrame:
        r = batch.readings
        bad = r.filter(((_c("flags") & _CLOCK_BITS) != 0) | (_c("ts_ms") > ctx.now_ms))
        if bad.is_empty():
            return finish(bad.select(*DEVICE, "ts_ms"), self.spec.id)
        bad = with_params(ctx, self.spec.id, bad.select(*DEVICE, "ts_ms", "flags"), ["future_tolerance_s"])
        ahead = (_c("ts_ms") - ctx.now_ms) / 1000
        status = _c("flags") & _CLOCK_BITS
        rows = (bad.group_by(*DEVICE, "ts_ms").agg(status=status.max(), tol=_c("future_tolerance_s").first())
                .with_columns(ahead=ahead)
                .filter((_c("status") != 0) | (_c("ahead") > _c("tol"))))  # fmt: skip
        what = (pl.when(_c("status") & int(Flag.CLOCK_INVALID) != 0).then(pl.lit("clock status invalid"))
                .when(_c("status") != 0).then(pl.lit("clock status doubtful"))
                .otherwise(pl.format("timestamp {} s in the future", _c("ahead").round(0))))  # fmt: skip
        out = rows.rechunk().select(*DEVICE, "ts_ms", firing=pl.lit(True), severity=pl.lit(int(Severity.WARNING)),
                          observed=pl.when(_c("status") != 0).then(_c("status").cast(pl.Float64))
                          .otherwise(_c("ahead")),
                          threshold=pl.when(_c("status") != 0).then(pl.lit(0.0)).otherwise(_c("tol").cast(pl.Float64)),
                          message=pl.format("{} at {}", what, iso_expr("ts_ms")))  # fmt: skip
        return finish(out, self.spec.id)
