"""Hand-made series for the alert tests: per rule, a subject that must raise and a near miss.

Everything is produced as JSON (the pipeline accepts it next to Avro), keyed like
production: device id on meter.readings, ICCID on sim.usage, subject id on the registry.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.simulate.identity import COUNTRIES, Sim, make_imei, make_sim

MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000
TENANT, SITE = "tenant-alerts", "site-a"


def _j(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@dataclass
class Series:
    """Messages per topic suffix, in send order."""

    messages: dict[str, list[tuple[bytes, bytes]]] = field(default_factory=dict)

    def add(self, topic: str, key: str, value: dict) -> None:
        self.messages.setdefault(topic, []).append((key.encode(), _j(value)))

    def register(self, subject: str, kind: str, **extra: object) -> None:
        self.add("registry.devices", subject, {"subject_id": subject, "subject_type": "sim" if kind == "sim" else
                 "device", "kind": kind, "tenant_id": TENANT, "site_id": extra.pop("site_id", SITE),
                 "timezone": "UTC", "updated_at": 0, **extra})  # fmt: skip

    def reading(self, device: str, ts: int, measurements: dict[str, float]) -> None:
        self.add("meter.readings", device, {"device_id": device, "ts": ts, "measurements": measurements})

    def usage(self, sim: Sim, start: int, **counters: object) -> None:
        rec = {"iccid": sim.iccid, "imsi": sim.imsi, "msisdn": sim.msisdn, "imei": counters.pop("imei", sim.imei),
               "period_start": start, "period_end": start + HOUR, "bytes_up": 40_000 + (start // HOUR * 7919) % 9_000,
               "bytes_down": 8_000,
               "sms_mo": 0, "sms_mt": 0, "voice_seconds": 0, "csd_seconds": 0, "sessions": 3, "mcc": sim.mcc,
               "mnc": sim.mnc, "rat": sim.rat, "plan_id": sim.plan_id}  # fmt: skip
        rec.update(counters)
        self.add("sim.usage", sim.iccid, rec)

    def count(self, topic: str) -> int:
        return len(self.messages.get(topic, []))


def electricity(s: Series, device: str, start: int, n: int, *, period: int = 5 * MIN,
                tweak: Callable[[int, int, dict[str, float]], None] | None = None, **reg: object) -> None:  # fmt: skip
    """A three-phase meter at ~1.2 kW: register in Wh, voltages ~230 V, 50 Hz, PF 0.95."""
    s.register(device, "electricity_meter", expected_period_s=period // 1000, nominal_voltage=230.0,
               nominal_frequency=50.0, rated_power_w=20_000.0, **reg)  # fmt: skip
    rng = random.Random(device)
    energy = 1_000_000.0
    for i in range(n):
        ts = start + i * period
        power = 1200 + rng.uniform(-100, 100)
        energy += power * period / HOUR
        m = {"active_energy_import": round(energy, 1), "active_power": round(power, 1),
             "voltage_l1": round(230 + rng.uniform(-1, 1), 1), "voltage_l2": round(231 + rng.uniform(-1, 1), 1),
             "voltage_l3": round(229 + rng.uniform(-1, 1), 1), "frequency": round(50 + rng.uniform(-0.02, 0.02), 3),
             "power_factor": round(0.95 + rng.uniform(-0.01, 0.01), 3)}  # fmt: skip
        if tweak is not None:
            tweak(i, ts, m)
            energy = m["active_energy_import"]
        s.reading(device, ts, m)


def sim_card(seed: str) -> Sim:
    return make_sim(random.Random(seed), COUNTRIES["DE"], "49")


def new_imei(seed: str) -> str:
    return make_imei(random.Random(seed))
