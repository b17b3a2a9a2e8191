"""The simulated fleet: tenants, sites (one gateway + SIM each), devices, registrations.

Sizing parameters of each device (load scale, register start values, tank size...)
are drawn here once; :mod:`pipeline.simulate.profiles` turns them into signals.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field, replace

from pipeline.simulate.config import DAY_MS, MINUTE_MS, SimConfig
from pipeline.simulate.identity import COUNTRIES, TENANTS, Country, Sim, make_sim

__all__ = ["MODEL", "PERIOD_S", "Device", "Fleet", "Site", "build_fleet"]

PERIOD_S = {"electricity_meter": 300, "generator": 300, "hvac": 300, "water_meter": 900, "gas_meter": 900}
_CODE = {"electricity_meter": "em", "water_meter": "wm", "gas_meter": "gm", "generator": "dg", "hvac": "ac"}
MODEL = {"electricity_meter": "Eastron SDM630", "water_meter": "Kamstrup flowIQ 2200",
          "gas_meter": "Itron G4 RF1", "generator": "Kirloskar KG1 + DSE7320", "hvac": "Daikin VRV IV"}  # fmt: skip


@dataclass(frozen=True)
class Device:
    device_id: str
    kind: str
    tenant_id: str
    site_id: str
    period_s: int
    rated_power_w: float | None = None
    tank_capacity_l: float | None = None
    params: dict[str, float] = field(default_factory=dict)
    registered: bool = True
    first_ms: int = 0  # an unregistered (newly installed) device reports from here on


@dataclass(frozen=True)
class Site:
    index: int
    site_id: str
    tenant_id: str
    country: Country
    branch: str
    latitude: float
    longitude: float
    commercial: bool
    solar: bool
    gateway_id: str
    sim: Sim
    devices: tuple[Device, ...]
    tariff_id: str | None
    tariff: str | None
    outages: tuple[tuple[int, int], ...]  # grid outages (generators run), epoch ms


@dataclass(frozen=True)
class Fleet:
    tenants: tuple[tuple[str, Country], ...]
    sites: tuple[Site, ...]

    @property
    def devices(self) -> list[Device]:
        return [d for s in self.sites for d in s.devices]


def _tariff(rng: random.Random, country: Country) -> tuple[str, str]:
    if country.iso == "IN":
        peak, normal = round(rng.uniform(8.0, 9.5), 2), round(rng.uniform(5.5, 7.0), 2)
        doc = {"currency": "INR", "default_rate": normal, "bands": [
            {"days": "mon-sat", "from": "09:00", "to": "12:00", "rate": peak},
            {"days": "mon-sat", "from": "18:00", "to": "22:00", "rate": round(peak + 0.6, 2)},
            {"days": "mon-sun", "from": "22:00", "to": "06:00", "rate": round(normal - 1.2, 2)}]}  # fmt: skip
        return "in-ht-tod-2026", json.dumps(doc, separators=(",", ":"))
    rate = round(rng.uniform(0.18, 0.34), 4)
    return f"{country.iso.lower()}-flat-2026", json.dumps({"currency": country.currency, "rate": rate})


def _device_params(
    rng: random.Random, kind: str, commercial: bool, role: str, solar: bool, country: Country
) -> tuple[dict[str, float], float | None, float | None]:
    u = rng.uniform
    if kind == "electricity_meter":
        if role == "main":
            base, peak, amps = (u(2e3, 6e3), u(15e3, 45e3), 160) if commercial else (u(5e2, 2e3), u(3e3, 9e3), 100)
        else:
            base, peak, amps = (u(300, 1500), u(2e3, 12e3), 63) if commercial else (u(150, 400), u(1.5e3, 5e3), 63)
        p = {
            "base_w": base,
            "peak_w": peak,
            "pf": u(0.93, 0.97) if commercial else u(0.95, 0.99),
            "w1": u(0.8, 1.2),
            "w2": u(0.8, 1.2),
            "w3": u(0.8, 1.2),
            "voff": u(-3, 3),
            "import_wh": u(5e7, 9e8) if commercial else u(2e6, 4e7),
            "pv_w": (base + peak) * u(0.9, 1.6) if solar and role == "main" else 0.0,
        }
        if p["pv_w"]:
            p["export_wh"] = u(1e6, 2e7)
        return p, 3 * 230.0 * amps, None
    if kind == "water_meter":
        return {"mean": u(60, 250) if not commercial else u(20, 120), "start": u(1e5, 3e6)}, None, None
    if kind == "gas_meter":
        mean = u(0.05, 0.3) if country.hot else (u(0.3, 1.5) if commercial else u(0.1, 0.6))
        return {"mean": mean, "start": u(1e3, 4e4)}, None, None
    if kind == "generator":
        rated, tank = rng.choice((25e3, 62.5e3, 125e3, 250e3)), rng.choice((200.0, 400.0, 600.0, 990.0))
        return {"burn_lph": rated / 1000 * u(0.12, 0.2), "level": tank * u(0.45, 0.9),
                "runtime_s": u(2e2, 6e3) * 3600, "batt": rng.choice((12.0, 24.0)),
                "refuel": float(rng.random() < 0.35)}, rated, tank  # fmt: skip
    rated = u(5e3, 40e3)
    mode = 2.0 if country.hot else 1.0  # cool / heat
    return {"duty": u(0.3, 0.6), "mode": mode, "ret": u(22.5, 25.5) if mode == 2 else u(19.5, 22.0),
            "runtime_s": u(2e3, 4e4) * 3600}, rated, None  # fmt: skip


def _kinds(rng: random.Random, commercial: bool, country: Country) -> list[str]:
    r = rng.randint
    if commercial:
        counts = {"electricity_meter": r(4, 7), "water_meter": r(1, 2),
                  "gas_meter": r(0, 1) if country.hot else 1, "generator": 1, "hvac": r(2, 4)}  # fmt: skip
    else:
        counts = {"electricity_meter": r(6, 9), "water_meter": r(2, 3),
                  "gas_meter": r(0, 1) if country.hot else r(1, 3),
                  "generator": 1 if country.iso == "IN" else r(0, 1),
                  "hvac": r(1, 2) if country.hot else r(0, 1)}  # fmt: skip
    return [k for k, n in counts.items() for _ in range(n)]


def _outages(rng: random.Random, country: Country, start_ms: int, now_ms: int) -> tuple[tuple[int, int], ...]:
    rate = 0.5 if country.iso == "IN" else 0.15  # per day
    n = sum(1 for _ in range(max(1, round((now_ms - start_ms) / DAY_MS * 20))) if rng.random() < rate / 20)
    spans = []
    for _ in range(n):
        begin = start_ms + rng.randrange(0, max(1, now_ms - start_ms - 4 * 3_600_000))
        begin -= begin % (5 * MINUTE_MS)
        spans.append((begin, begin + rng.randrange(8, 36) * 5 * MINUTE_MS))
    return tuple(sorted(spans))


def build_fleet(rng: random.Random, config: SimConfig, start_ms: int, now_ms: int) -> Fleet:
    tenants: list[tuple[str, Country]] = []
    for t in range(config.tenants):
        name, iso = TENANTS[t % len(TENANTS)]
        tenants.append((name if t < len(TENANTS) else f"{name}-{t // len(TENANTS) + 1}", COUNTRIES[iso]))
    sites: list[Site] = []
    for t, (tenant_id, country) in enumerate(tenants):
        prefix = tenant_id.split("-")[0] + (str(t // len(TENANTS) + 1) if t >= len(TENANTS) else "")
        issuer = f"{rng.randrange(10, 99)}"
        for n in range(config.sites_per_tenant):
            city, lat, lon = country.cities[n % len(country.cities)]
            site_id = f"{prefix}-{city.lower()}-{n + 1:02d}"
            commercial, solar = rng.random() < 0.6, rng.random() < 0.4
            tariff_id, tariff = _tariff(rng, country) if rng.random() < 0.67 else (None, None)
            devices, seen = [], dict.fromkeys(_CODE, 0)
            for kind in _kinds(rng, commercial, country):
                seen[kind] += 1
                role = ("main" if seen[kind] == 1 else "sub") if kind == "electricity_meter" else ""
                params, rated, tank = _device_params(rng, kind, commercial, role, solar, country)
                devices.append(Device(f"{site_id}-{_CODE[kind]}{seen[kind]:02d}", kind, tenant_id, site_id,
                                      PERIOD_S[kind], rated, tank, params))  # fmt: skip
            sites.append(Site(
                len(sites), site_id, tenant_id, country, city, round(lat + rng.uniform(-0.05, 0.05), 5),
                round(lon + rng.uniform(-0.05, 0.05), 5), commercial, solar, f"{site_id}-gw",
                make_sim(rng, country, issuer), tuple(devices), tariff_id, tariff,
                _outages(rng, country, start_ms, now_ms)))  # fmt: skip
    for u in range(config.unknown_devices):  # newly installed meters nobody registered yet
        i = rng.randrange(len(sites))
        s = sites[i]
        params, rated, _ = _device_params(rng, "electricity_meter", s.commercial, "sub", False, s.country)
        first = max(start_ms, now_ms - rng.randrange(4, 9) * 3_600_000)
        rogue = Device(f"{s.site_id}-em{90 + u}", "electricity_meter", s.tenant_id, s.site_id, 300, rated,
                       None, params, registered=False, first_ms=first)  # fmt: skip
        sites[i] = replace(s, devices=(*s.devices, rogue))
    return Fleet(tuple(tenants), tuple(sites))
