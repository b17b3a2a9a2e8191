"""Signal models of meters: three-phase electricity (with solar), water, gas.

Each model returns a :class:`Series`: the device's reading times, one measurement
dict per time, and what really happened for the data faults it was asked to play
(the exact sample span goes into the ground truth).
"""

from __future__ import annotations

import random
from typing import Any

from pipeline.simulate.faults import DataFault
from pipeline.simulate.fleet import Device, Site
from pipeline.simulate.machines import simulate_generator, simulate_hvac
from pipeline.simulate.timeline import TICK_MS, Series, Timeline, bump

__all__ = ["simulate_device"]

FLAT_SAMPLES = 14


def _register(
    rng: random.Random, ts: list[int], deltas: list[float], start: float, fault: DataFault | None, cap: float
) -> tuple[list[float], dict[str, Any] | None]:
    """Cumulative register values from per-sample increments, with at most one register fault."""
    cum, c = [], 0.0
    for d in deltas:
        c += d
        cum.append(c)
    n = len(cum)
    vals = [start + x for x in cum]
    if fault is None or fault.kind not in ("rollover", "reset", "spike", "flatline") or n < 3:
        return vals, None
    k = max(1, min(n - 2, (fault.at_ms - ts[0]) // (ts[1] - ts[0])))
    if fault.kind in ("rollover", "spike"):  # needs a sample that really advances the register
        while k < n - 1 and not (0 < deltas[k] and (fault.kind == "rollover" or 10 * deltas[k] <= cap)):
            k += 1
        if deltas[k] <= 0:
            return vals, None
    if fault.kind == "rollover":
        ceiling = fault.params["ceiling"]
        base = ceiling - cum[k - 1] - deltas[k] * rng.uniform(0.2, 0.8)
        vals = [v - ceiling if v >= ceiling else v for v in (base + x for x in cum)]
        return vals, {"ts": ts[k], "end_ts": ts[k], "detail": f"wraps at ceiling {ceiling:g}: "
                      f"{vals[k - 1]:.3f} -> {vals[k]:.3f}"}  # fmt: skip
    if fault.kind == "reset":
        vals = vals[:k] + [x - cum[k - 1] for x in cum[k:]]
        return vals, {"ts": ts[k], "end_ts": ts[k], "detail": f"reset to ~0: {vals[k - 1]:.3f} -> {vals[k]:.3f}"}
    if fault.kind == "spike":
        extra = 9 * deltas[k]
        vals = vals[:k] + [v + extra for v in vals[k:]]
        return vals, {"ts": ts[k], "end_ts": ts[k], "detail": f"interval consumption x10: {deltas[k]:.3f} -> "
                      f"{10 * deltas[k]:.3f}"}  # fmt: skip
    end = min(n, k + FLAT_SAMPLES)
    lost = cum[end - 1] - cum[k - 1]
    vals = vals[:k] + [vals[k - 1]] * (end - k) + [v - lost for v in vals[end:]]
    return vals, {
        "ts": ts[k],
        "end_ts": ts[end - 1],
        "detail": f"register frozen at {vals[k - 1]:.3f} for {end - k} samples while power > 50 W",
    }


def _electricity(rng: random.Random, d: Device, site: Site, tl: Timeline, fault: DataFault | None) -> Series:
    p = d.params
    base, peak, pf0, pv_w = p["base_w"], p["peak_w"], p["pf"], p["pv_w"]
    shape = tl.commercial if site.commercial else tl.residential
    wsum = p["w1"] + p["w2"] + p["w3"]
    weights = (p["w1"] / wsum, p["w2"] / wsum, p["w3"] / wsum)
    voff = (p["voff"], p["voff"] + rng.uniform(-1.5, 1.5), p["voff"] + rng.uniform(-1.5, 1.5))
    span = (fault.at_ms, fault.at_ms + 12 * TICK_MS) if fault and fault.kind in (
        "voltage_out_of_band", "low_power_factor") else (0, 0)  # fmt: skip
    phase = fault.params.get("phase", 0) if fault else 0
    gauss, dt_h = rng.gauss, TICK_MS / 3_600_000
    ts, vals, imports, exports, x = list(tl.ticks), [], [], [], 0.0
    for i, t in enumerate(ts):
        x = 0.85 * x + gauss(0, 0.05)
        load = max(0.7 * base, (base + (peak - base) * shape[i]) * (1 + x))
        net = load - pv_w * tl.sun[i]
        in_span = span[0] <= t < span[1]
        pf = min(0.995, pf0 + gauss(0, 0.006))
        if in_span and fault.kind == "low_power_factor":
            pf = 0.8 + gauss(0, 0.004)
        m: dict[str, float] = {}
        for j in range(3):
            v = 230.0 + voff[j] - 3.0 * load / peak + gauss(0, 0.9)
            if in_span and fault.kind == "voltage_out_of_band" and j == phase:
                v = 195.0 + gauss(0, 0.4)
            pj = net * weights[j]
            m[f"voltage_l{j + 1}"] = round(v, 1)
            m[f"current_l{j + 1}"] = round(abs(pj) / (v * pf), 2)
            m[f"active_power_l{j + 1}"] = round(pj, 1)
        m["active_power"] = round(net, 1)
        m["power_factor"] = round(pf, 3)
        m["frequency"] = tl.frequency[i]
        vals.append(m)
        imports.append(max(net, 0.0) * dt_h if i else 0.0)
        exports.append(max(-net, 0.0) * dt_h if i else 0.0)
    cap = (d.rated_power_w or 1e9) * dt_h * 0.8
    reg, rec = _register(rng, ts, imports, p["import_wh"], fault, cap)
    for m, v in zip(vals, reg, strict=True):
        m["active_energy_import"] = round(v, 1)
    if pv_w:
        for m, v in zip(vals, _register(rng, ts, exports, p["export_wh"], None, cap)[0], strict=True):
            m["active_energy_export"] = round(v, 1)
    series = Series(ts, vals)
    if rec is not None:
        series.records.append(rec)
    elif fault is not None and fault.kind in ("voltage_out_of_band", "low_power_factor") and span[0] >= ts[0]:
        what = f"voltage_l{phase + 1} at 195 V" if fault.kind == "voltage_out_of_band" else "power factor 0.80"
        series.records.append({"ts": span[0], "end_ts": span[1] - TICK_MS, "detail": f"{what} for one hour"})
    return series


def _volume(rng: random.Random, d: Device, site: Site, tl: Timeline, fault: DataFault | None) -> Series:
    """Water (L) or gas (m3) register every 15 minutes."""
    water = d.kind == "water_meter"
    code, digits = ("water_volume", 1) if water else ("gas_volume", 3)
    idx = [i for i, t in enumerate(tl.ticks) if t % (d.period_s * 1000) == 0]
    ts, deltas, mean = [tl.ticks[i] for i in idx], [], d.params["mean"]
    for n, i in enumerate(idx):
        h = tl.hour[i]
        if water:
            s = tl.commercial[i] + 0.05 if site.commercial else 0.1 + bump(h, 7.0, 1.0) + 0.8 * bump(h, 20.0, 1.5)
        elif site.country.hot:
            s = 0.05 + bump(h, 8.0, 0.7) + bump(h, 13.0, 0.7) + bump(h, 20.0, 0.8)
        else:
            s = 0.6 + 0.5 * bump(h, 6.5, 1.5) + 0.4 * bump(h, 18.5, 2.0) - 0.3 * bump(h, 14.0, 2.5)
        deltas.append(0.0 if n == 0 else max(0.0, mean * s * (1 + rng.gauss(0, 0.35))))
    reg, rec = _register(rng, ts, deltas, d.params["start"], fault, 1e18)
    series = Series(ts, [{code: round(v, digits)} for v in reg])
    if rec is not None:
        series.records.append(rec)
    return series


def simulate_device(rng: random.Random, d: Device, site: Site, tl: Timeline, fault: DataFault | None) -> Series:
    if d.kind == "electricity_meter":
        return _electricity(rng, d, site, tl, fault)
    if d.kind in ("water_meter", "gas_meter"):
        return _volume(rng, d, site, tl, fault)
    if d.kind == "generator":
        return simulate_generator(rng, d, site, tl, fault)
    return simulate_hvac(rng, d, site, tl)
