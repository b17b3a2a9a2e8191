"""Signal models of machines: diesel generators and HVAC units (5-minute samples)."""

from __future__ import annotations

import random

from pipeline.simulate.faults import DataFault
from pipeline.simulate.fleet import Device, Site
from pipeline.simulate.timeline import TICK_MS, Series, Timeline, bump

__all__ = ["simulate_generator", "simulate_hvac"]

DROP_SAMPLES, DROP_LITRES = 8, 20.0


def simulate_generator(rng: random.Random, d: Device, site: Site, tl: Timeline, fault: DataFault | None) -> Series:
    """Mostly stopped; runs through grid outages burning fuel; occasional refuel; optional fuel theft."""
    p, tank, gauss = d.params, float(d.tank_capacity_l or 500.0), rng.gauss
    ts, n = list(tl.ticks), len(tl.ticks)
    load = {o: rng.uniform(0.35, 0.8) for o in site.outages}
    running: list[float] = []
    for t in ts:
        running.append(next((load[o] for o in site.outages if o[0] <= t < o[1]), 0.0))
    refuel_at = rng.randrange(n // 4, max(n // 4 + 1, 3 * n // 4)) if p["refuel"] else -1
    drop: set[int] = set()
    if fault is not None and fault.kind == "fuel_drop":
        k = max(0, tl.index(fault.at_ms))
        while k + DROP_SAMPLES <= n and any(running[k : k + DROP_SAMPLES]):
            k += 1
        if k + DROP_SAMPLES <= n:
            drop = set(range(k, k + DROP_SAMPLES))
    series = Series(ts, [])
    level, runtime, batt = p["level"], p["runtime_s"], p["batt"]
    ambient = 30.0 if site.country.hot else 12.0
    coolant = ambient
    for i, t in enumerate(ts):
        run = running[i]
        if run:
            level -= p["burn_lph"] * (0.3 + run) * TICK_MS / 3_600_000
            runtime += TICK_MS // 1000
            coolant += (84.0 - coolant) * 0.6 + gauss(0, 0.6)
            volts = batt * 1.155 + gauss(0, 0.04)
        else:
            coolant += (ambient - coolant) * 0.2 + gauss(0, 0.15)
            volts = batt * 1.055 + gauss(0, 0.03)
            if ((i >= refuel_at >= 0) or level < 0.2 * tank) and i not in drop:  # a running engine waits
                added = tank * rng.uniform(0.9, 0.95) - level
                if added > 0:
                    level += added
                    series.records.append({"kind": "refuel", "event": True, "ts": t, "end_ts": t,
                                           "detail": f"+{added:.1f} L"})  # fmt: skip
                refuel_at = -1
        if i in drop:
            level -= DROP_LITRES / DROP_SAMPLES
        level = max(0.0, level)
        series.values.append({
            "fuel_level": round(min(tank, max(0.0, level + gauss(0, 0.08))), 1),
            "generator_runtime": float(runtime),
            "engine_state": 1.0 if run else 0.0,
            "battery_voltage": round(volts, 2),
            "coolant_temperature": round(coolant, 1),
        })  # fmt: skip
    for b, e in site.outages:
        if e > ts[0] and b <= ts[-1]:
            series.records.append({"kind": "generator_run", "event": True, "ts": max(b, ts[0]),
                                   "end_ts": min(e - TICK_MS, ts[-1]), "detail": "grid outage"})  # fmt: skip
    if drop:
        first, last = min(drop), max(drop)
        series.records.append(
            {
                "ts": ts[first],
                "end_ts": ts[last],
                "detail": f"stopped, level falls {DROP_LITRES:g} L over {DROP_SAMPLES} samples",
            }
        )
    return series


def simulate_hvac(rng: random.Random, d: Device, site: Site, tl: Timeline) -> Series:
    """Compressor cycling with duty by time of day; commercial units switch off out of hours."""
    p, gauss = d.params, rng.gauss
    mode, ret0, duty0 = p["mode"], p["ret"], p["duty"]
    cool = mode == 2.0
    series = Series(list(tl.ticks), [])
    on, left, runtime = False, 0, p["runtime_s"]
    for i in range(len(tl.ticks)):
        h = tl.hour[i]
        active = mode if not site.commercial or (not tl.weekend[i] and 7 <= h < 20) else 0.0
        duty = min(0.9, duty0 * (0.7 + 0.6 * bump(h, 15.0, 3.0) if cool else 0.7 + 0.6 * bump(h, 6.5, 2.0)))
        if not active:
            on, left = False, 0
        elif left <= 0:
            on = not on
            run_len = rng.randint(3, 8)
            left = run_len if on else max(2, round(run_len * (1 - duty) / duty))
        left -= 1
        ret = ret0 + 0.8 * bump(h, 16.0, 3.0) + gauss(0, 0.2)
        if on:
            runtime += TICK_MS // 1000
            supply = ret - 10.0 + gauss(0, 0.6) if cool else ret + 13.0 + gauss(0, 0.8)
            w_in, w_out = (7.0, 12.0) if cool else (50.0, 42.0)
        else:
            supply = ret - 1.5 + gauss(0, 0.3) if cool else ret + 1.0 + gauss(0, 0.3)
            w_in, w_out = (14.0, 15.0) if cool else (30.0, 29.0)
        series.values.append({
            "hvac_supply_air_temp": round(supply, 1),
            "hvac_return_air_temp": round(ret, 1),
            "hvac_water_inlet_temp": round(w_in + gauss(0, 0.3), 1),
            "hvac_water_outlet_temp": round(w_out + gauss(0, 0.3), 1),
            "hvac_run_state": 1.0 if on else 0.0,
            "hvac_mode": float(active),
            "hvac_runtime": float(runtime),
        })  # fmt: skip
    return series
