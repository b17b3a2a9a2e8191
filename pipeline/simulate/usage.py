"""Hourly SIM usage records of a site's gateway SIM, following the gateway's real traffic.

Bytes are the encoded size of what the gateway sent in the hour plus protocol
overhead and keep-alives; an hour inside a SIM-offline span has no sessions and
no bytes. SIM faults (data spike, SMS flood, IMEI change, roaming) are applied here.
"""

from __future__ import annotations

import random
from typing import Any

from pipeline.simulate.config import HOUR_MS, MINUTE_MS
from pipeline.simulate.faults import DataFault
from pipeline.simulate.fleet import Site
from pipeline.simulate.identity import make_imei

__all__ = ["hourly_usage"]


def hourly_usage(
    rng: random.Random,
    site: Site,
    iccid: str,
    start_ms: int,
    now_ms: int,
    traffic: dict[int, list[int]],
    offline: tuple[int, int] | None,
    faults: list[DataFault],
) -> tuple[list[tuple[int, dict[str, Any]]], list[dict[str, Any]]]:
    """``(send time, SimUsage record)`` per full hour of the history, and the realised SIM faults."""
    sim, country = site.sim, site.country
    by_kind = {f.kind: f for f in faults}
    realised: list[dict[str, Any]] = []
    new_imei = make_imei(rng) if "sim_imei_change" in by_kind else sim.imei
    first = -(-start_ms // HOUR_MS) * HOUR_MS
    out: list[tuple[int, dict[str, Any]]] = []
    for h in range(first, now_ms - HOUR_MS + 1, HOUR_MS):
        sent, msgs = traffic.get(h, (0, 0))
        mcc, mnc, imei = sim.mcc, sim.mnc, sim.imei
        sms_mo = 1 if rng.random() < 0.02 else 0
        sms_mt = 1 if rng.random() < 0.05 else 0
        up = round(sent * 1.18) + msgs * 120 + rng.randint(2_000, 6_000)
        down = round(up * 0.12) + msgs * 60 + rng.randint(1_000, 3_000)
        sessions = msgs // 12 + rng.randint(1, 3)
        f = by_kind.get("sim_imei_change")
        if f and h >= f.at_ms:
            imei = new_imei
        f = by_kind.get("sim_roaming")
        if f and f.at_ms <= h < f.at_ms + 4 * HOUR_MS:
            mcc, mnc = country.roaming
        f = by_kind.get("sim_sms_flood")
        if f and f.at_ms <= h < f.at_ms + 6 * HOUR_MS:
            sms_mo += 25
        f = by_kind.get("sim_data_spike")
        if f and h == f.at_ms:  # at most 40% of the plan: a spike, not an over-plan alert
            extra = min(f.params["bytes"], sim.plan_allowance_bytes * 2 // 5)
            up += extra
            down += extra // 20
        if offline and offline[0] <= h < offline[1]:
            up = down = sessions = sms_mo = sms_mt = 0
        record = {"iccid": iccid, "imsi": sim.imsi, "msisdn": sim.msisdn, "imei": imei, "period_start": h,
                  "period_end": h + HOUR_MS, "bytes_up": up, "bytes_down": down, "sms_mo": sms_mo,
                  "sms_mt": sms_mt, "voice_seconds": 0, "csd_seconds": 0, "sessions": sessions, "mcc": mcc,
                  "mnc": mnc, "rat": sim.rat, "plan_id": sim.plan_id}  # fmt: skip
        delay = rng.randint(2, 25) * MINUTE_MS
        if rng.random() < 0.03:  # providers restate late
            delay += rng.randint(2, 24) * HOUR_MS
        out.append((h + HOUR_MS + delay, record))
    hours = {h for _, r in out for h in (r["period_start"],)}
    details = {
        "sim_data_spike": (0, lambda f: f"+{min(f.params['bytes'], sim.plan_allowance_bytes * 2 // 5)} bytes up "
                                        "in one hour"),
        "sim_sms_flood": (5, lambda f: "150 SMS MO over 6 hours"),
        "sim_imei_change": (0, lambda f: f"IMEI {sim.imei} -> {new_imei}"),
        "sim_roaming": (3, lambda f: f"serving network {country.roaming[0]}-{country.roaming[1]} on a "
                                     f"stationary SIM (home {sim.mcc}-{sim.mnc}) for 4 hours"),
    }  # fmt: skip
    if offline:
        realised.append({"kind": "sim_offline", "ts": offline[0], "end_ts": offline[1] - HOUR_MS,
                         "detail": f"no sessions or bytes for {(offline[1] - offline[0]) // HOUR_MS} h: "
                                   "the site's devices are silent (gap cause=connectivity)"})  # fmt: skip
    for f in faults:
        extra, describe = details[f.kind]
        if f.at_ms in hours:
            realised.append({"kind": f.kind, "ts": f.at_ms, "end_ts": f.at_ms + extra * HOUR_MS,
                             "detail": describe(f)})  # fmt: skip
    return out, realised
