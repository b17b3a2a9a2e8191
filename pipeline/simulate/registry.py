"""DeviceRegistration records for the registry topic: every SIM, gateway and registered device.

Registrations carry what later stages need: tenant/site/branch/timezone, the SIM
link, expected reading period, rated power, tank capacity, register ceilings
(small ones on devices that roll over), tariffs and SIM plans.
"""

from __future__ import annotations

import random
from typing import Any

from pipeline.simulate.config import DAY_MS
from pipeline.simulate.fleet import MODEL, Fleet

__all__ = ["registrations"]


def registrations(
    fleet: Fleet,
    rng: random.Random,
    start_ms: int,
    upload_period_s: int,
    ceilings: dict[str, dict[str, float]],
    iccids: dict[str, str],
) -> list[dict[str, Any]]:
    """DeviceRegistration records of every SIM, gateway and registered device.

    ``ceilings`` overrides register ceilings per device (rollover faults);
    ``iccids`` replaces a site's ICCID (Luhn fault) by site id.
    """
    out: list[dict[str, Any]] = []
    for s in fleet.sites:
        iccid = iccids.get(s.site_id, s.sim.iccid)
        base = {"tenant_id": s.tenant_id, "site_id": s.site_id, "branch": s.branch, "timezone": s.country.timezone,
                "latitude": s.latitude, "longitude": s.longitude, "key_id": None, "event": "registered",
                "replaced": None, "rated_power_w": None, "expected_period_s": None, "nominal_voltage": None,
                "nominal_frequency": None, "tank_capacity_l": None, "register_ceilings": {}, "tariff_id": None,
                "tariff": None, "plan_id": None, "plan_allowance_bytes": None, "plan_cycle_start_day": None,
                "stationary": None, "gateway_id": s.gateway_id, "sim_iccid": iccid}  # fmt: skip

        def updated() -> int:
            return start_ms - rng.randrange(DAY_MS, 400 * DAY_MS)

        sim = s.sim
        out.append(
            {
                **base,
                "subject_id": iccid,
                "subject_type": "sim",
                "kind": "sim",
                "expected_period_s": 3600,
                "plan_id": sim.plan_id,
                "plan_allowance_bytes": sim.plan_allowance_bytes,
                "plan_cycle_start_day": sim.plan_cycle_start_day,
                "stationary": True,
                "attributes": {"rat": sim.rat, "home_network": sim.mcc + sim.mnc},
                "updated_at": updated(),
            }
        )
        out.append({**base, "subject_id": s.gateway_id, "subject_type": "device", "kind": "gateway",
                    "gateway_id": None, "expected_period_s": upload_period_s,
                    "attributes": {"model": "Teltonika RUT241"}, "updated_at": updated()})  # fmt: skip
        for d in s.devices:
            if not d.registered:
                continue
            attrs = {"model": MODEL[d.kind], "profile": "commercial" if s.commercial else "residential"}
            reg = {**base, "subject_id": d.device_id, "subject_type": "device", "kind": d.kind,
                   "expected_period_s": d.period_s, "rated_power_w": d.rated_power_w,
                   "tank_capacity_l": d.tank_capacity_l, "register_ceilings": dict(ceilings.get(d.device_id, {})),
                   "attributes": attrs, "updated_at": updated()}  # fmt: skip
            if d.kind in ("electricity_meter", "generator"):
                reg.update(nominal_voltage=230.0, nominal_frequency=50.0)
            if d.kind == "electricity_meter":
                reg.update(tariff_id=s.tariff_id, tariff=s.tariff)
                attrs.update(role="main" if d.device_id.endswith("-em01") else "sub",
                             solar="true" if d.params.get("pv_w") else "false")  # fmt: skip
            out.append(reg)
    return out
