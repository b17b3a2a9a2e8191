"""Which faults to inject where: data faults planned per device/SIM, record-level faults per reading.

Data faults (rollover, reset, spike, flatline, gap, fuel_drop, voltage_out_of_band,
low_power_factor and the SIM faults) produce normal rows and are meant for the
derive and anomaly stages. Record-level faults each produce at most one
dead-letter record per reading; message-level faults one per message.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from pipeline.simulate.config import HOUR_MS, SimConfig
from pipeline.simulate.fleet import Device, Fleet

__all__ = ["RECORD_KINDS", "DataFault", "FaultPlan", "corrupt", "garbage_bytes", "plan_faults", "wrong_json"]

CEILINGS = {"electricity_meter": ("active_energy_import", 999_999_990.0),  # 999,999.99 kWh display
            "water_meter": ("water_volume", 9_999_999.0), "gas_meter": ("gas_volume", 9_999.999)}  # fmt: skip

# record-level kind -> (relative weight, dead-letter reason or None)
RECORD_KINDS: dict[str, tuple[float, str | None]] = {
    "out_of_range": (0.2, "out_of_range"), "non_finite": (0.1, "non_finite"),
    "unknown_quantity": (0.1, "unknown_quantity"), "future_timestamp": (0.06, "future_timestamp"),
    "too_late": (0.06, "too_late"), "exact_duplicate": (0.3, None),
    "conflicting_duplicate": (0.18, "conflicting_duplicate"),
}  # fmt: skip
_OUT_OF_RANGE = {"electricity_meter": (("voltage_l1", 612.0), ("frequency", 80.0), ("power_factor", 1.7),
                                       ("current_l2", -3.5)),
                 "generator": (("battery_voltage", 75.0), ("coolant_temperature", 180.0)),
                 "hvac": (("hvac_supply_air_temp", -62.0), ("hvac_mode", 7.0)),
                 "water_meter": (("water_volume", -1.0),), "gas_meter": (("gas_volume", -0.5),)}  # fmt: skip
_NON_FINITE = {"electricity_meter": ("active_power_l2", "current_l1", "voltage_l3"),
               "generator": ("coolant_temperature",), "hvac": ("hvac_return_air_temp",),
               "water_meter": ("water_volume",), "gas_meter": ("gas_volume",)}  # fmt: skip
_UNKNOWN = {"electricity_meter": "voltage_l4", "generator": "oil_pressure", "hvac": "hvac_humidity",
            "water_meter": "water_temperature", "gas_meter": "gas_pressure"}  # fmt: skip
_CONFLICT = {"electricity_meter": ("voltage_l1", 1.3), "generator": ("coolant_temperature", 0.8),
             "hvac": ("hvac_return_air_temp", 0.4), "water_meter": ("water_volume", 2.0),
             "gas_meter": ("gas_volume", 0.01)}  # fmt: skip


@dataclass(frozen=True)
class DataFault:
    kind: str
    at_ms: int
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FaultPlan:
    device: dict[str, DataFault] = field(default_factory=dict)
    gaps: dict[str, tuple[int, int]] = field(default_factory=dict)  # device id -> silent span (device cause)
    offline: dict[str, tuple[int, int]] = field(default_factory=dict)  # site id -> SIM offline span
    sim: dict[str, list[DataFault]] = field(default_factory=dict)  # site id -> SIM faults
    ceilings: dict[str, dict[str, float]] = field(default_factory=dict)
    iccids: dict[str, str] = field(default_factory=dict)  # site id -> ICCID with a wrong Luhn digit
    scale: int = 0  # 0 = no faults at all


def plan_faults(rng: random.Random, fleet: Fleet, config: SimConfig, start_ms: int, now_ms: int) -> FaultPlan:
    k = max(1, round(config.sites / 9))
    span = now_ms - start_ms
    lo, hi = start_ms + span // 4, max(start_ms + span // 4 + 1, now_ms - max(span // 8, 3 * HOUR_MS))

    def when(step: int = 300_000) -> int:
        t = rng.randrange(lo, hi)
        return t - t % step

    sites = list(fleet.sites)
    rng.shuffle(sites)
    plan = FaultPlan(scale=k)
    n_off = min(2 * k, len(sites) // 3)
    for s in sites[:n_off]:
        begin = when(HOUR_MS)
        plan.offline[s.site_id] = (begin, begin + rng.randint(2, 4) * HOUR_MS)
    rest = sites[n_off:]
    pool: list[Device] = [d for s in rest for d in s.devices if d.registered]
    rng.shuffle(pool)
    pv = {d.device_id for d in pool if d.params.get("pv_w")}
    meters = ("electricity_meter", "water_meter", "gas_meter")
    wanted = (("rollover", 2 * k, meters), ("reset", k, meters), ("spike", 2 * k, ("electricity_meter",)),
              ("flatline", 2 * k, ("electricity_meter",)), ("gap", 2 * k, (*meters, "generator", "hvac")),
              ("fuel_drop", 2 * k, ("generator",)), ("voltage_out_of_band", 2 * k, ("electricity_meter",)),
              ("low_power_factor", 2 * k, ("electricity_meter",)))  # fmt: skip
    for kind, count, kinds in wanted:
        chosen = [d for d in pool if d.kind in kinds and not (d.device_id in pv and kind != "rollover")][:count]
        for d in chosen:
            pool.remove(d)
            if kind == "gap":
                begin = when(HOUR_MS)
                plan.gaps[d.device_id] = (begin, begin + rng.randint(2, 5) * HOUR_MS)
                continue
            params: dict[str, Any] = {}
            if kind == "rollover":
                code, ceiling = CEILINGS[d.kind]
                params["ceiling"] = ceiling
                plan.ceilings[d.device_id] = {code: ceiling}
            elif kind == "voltage_out_of_band":
                params["phase"] = rng.randrange(3)
            step = HOUR_MS if kind in ("voltage_out_of_band", "low_power_factor") else 300_000
            plan.device[d.device_id] = DataFault(kind, when(step), params)
    sim_sites = rest or sites
    sim_wanted = (("sim_data_spike", 2 * k), ("sim_sms_flood", k), ("sim_imei_change", k), ("sim_roaming", k))
    i = rng.randrange(len(sim_sites))
    for kind, count in sim_wanted:
        for _ in range(count):
            s = sim_sites[i % len(sim_sites)]
            i += 1
            params = {"bytes": rng.randint(30, 80) * 1_000_000} if kind == "sim_data_spike" else {}
            plan.sim.setdefault(s.site_id, []).append(DataFault(kind, when(HOUR_MS), params))
    for s in rng.sample(sites, min(k, len(sites))):
        good = s.sim.iccid
        plan.iccids[s.site_id] = good[:-1] + str((int(good[-1]) + rng.randint(1, 9)) % 10)
    return plan


def corrupt(rng: random.Random, kind: str, device_kind: str, m: dict[str, float]) -> tuple[dict[str, float], str]:
    """A copy of measurements ``m`` with one bad channel (``kind`` is a channel-level record fault)."""
    out = dict(m)
    if kind == "out_of_range":
        code, value = rng.choice(_OUT_OF_RANGE[device_kind])
    elif kind == "non_finite":
        code, value = rng.choice(_NON_FINITE[device_kind]), rng.choice((math.nan, math.inf, -math.inf))
    elif kind == "unknown_quantity":
        code, value = _UNKNOWN[device_kind], round(rng.uniform(1, 100), 2)
    else:  # conflicting_duplicate
        code, delta = _CONFLICT[device_kind]
        value = round(out[code] + delta, 3)
    out[code] = value
    return out, f"{code}={value!r}"


def garbage_bytes(rng: random.Random) -> bytes:
    """Bytes no decoder recognises: first byte is none of C3, 00, '{' or whitespace."""
    first = rng.choice([b for b in range(0x80, 0x100) if b != 0xC3])
    return bytes([first]) + rng.randbytes(rng.randint(16, 300))


def wrong_json(rng: random.Random, ts: int) -> bytes:
    return (f'{{"sensor":"th-{rng.randrange(1000):03d}","temperature_c":{rng.uniform(15, 30):.1f},'
            f'"humidity":{rng.randint(30, 70)},"time":{ts}}}').encode()  # fmt: skip
