"""``build_scenario``: the whole simulated history as Kafka messages plus its exact ground truth.

Order of work (all randomness from one ``random.Random(config.seed)``): fleet,
fault plan, registrations, then site by site the readings and the SIM usage that
follows the gateway's traffic, then the message-level faults; telemetry is finally
sorted by simulated send time (ties keep creation order).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.codecs import RecordType, WireFormat
from pipeline.simulate.builder import Builder, Encoder
from pipeline.simulate.config import HOUR_MS, READINGS_TOPIC, REGISTRY_TOPIC, SIM_USAGE_TOPIC, OutMessage, SimConfig
from pipeline.simulate.dlms import simulate_dlms
from pipeline.simulate.faults import garbage_bytes, plan_faults, wrong_json
from pipeline.simulate.fleet import Site, build_fleet
from pipeline.simulate.registry import registrations
from pipeline.simulate.truth import GroundTruth
from pipeline.simulate.usage import hourly_usage

__all__ = ["Scenario", "build_scenario"]


@dataclass(frozen=True)
class Scenario:
    registrations: list[OutMessage]
    telemetry: list[OutMessage]  # meter readings, encrypted meter frames and SIM usage, in send order
    truth: GroundTruth
    dlms_keys: dict[str, Any] = field(default_factory=dict)  # key file of the DLMS meters (KeyStore format)

    def write_dlms_keys(self, path: str | Path) -> Path:
        """Write the DLMS meters' key file (JSON, owner read/write only) for ``DLMS_KEYS_FILE``."""
        path = Path(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(self.dlms_keys or {"meter": []}, fh, indent=1)
        return path


def _sim_usage(b: Builder, site: Site, traffic: dict[int, list[int]]) -> None:
    iccid = b.plan.iccids.get(site.site_id, site.sim.iccid)
    records, realised = hourly_usage(b.rng, site, iccid, b.start, b.now, traffic,
                                     b.plan.offline.get(site.site_id), b.plan.sim.get(site.site_id, []))  # fmt: skip
    for send, record in records:
        b.emit(send, SIM_USAGE_TOPIC, iccid, b.encode(RecordType.SIM_USAGE, record, b.fmt()))
        b.tally.sim_record(site.tenant_id, record["period_start"], luhn_failed=iccid != site.sim.iccid)
    for f in realised:
        b.tally.fault(f["kind"], SIM_USAGE_TOPIC, site.tenant_id, f["ts"], f["detail"], None, iccid=iccid,
                      end_ts=f["end_ts"])  # fmt: skip
    if iccid != site.sim.iccid:
        b.tally.fault("iccid_luhn", SIM_USAGE_TOPIC, site.tenant_id, b.start, f"{len(records)} records; check "
                      "digit wrong: accepted and flagged", None, iccid=iccid, end_ts=b.now)  # fmt: skip


def _usage_record(site: Site, iccid: str, t: int, plan_id: str | None) -> dict[str, Any]:
    sim, h = site.sim, t - t % HOUR_MS
    return {"iccid": iccid, "imsi": sim.imsi, "msisdn": sim.msisdn, "imei": None, "period_start": h,
            "period_end": h + HOUR_MS, "bytes_up": 1200, "bytes_down": 300, "sms_mo": 0, "sms_mt": 0,
            "voice_seconds": 0, "csd_seconds": 0, "sessions": 1, "mcc": sim.mcc, "mnc": sim.mnc, "rat": sim.rat,
            "plan_id": plan_id}  # fmt: skip


def _message_faults(b: Builder) -> None:
    """Whole-message faults: one dead letter each, no rows."""
    rng, k = b.rng, b.plan.scale
    devices = [d for d in b.fleet.devices if d.registered]

    def add(kind: str, topic: str, key: str, tenant: str, t: int, value: bytes, detail: str, reason: str,
            send: int | None = None) -> None:  # fmt: skip
        b.emit(t if send is None else send, topic, key, value)
        ids = {"iccid": key} if topic == SIM_USAGE_TOPIC else {"device_id": key}
        b.tally.fault(kind, topic, tenant, t, detail, reason, **ids)
        b.tally.deadletter[reason] += 1

    for _ in range(3 * k):
        d = rng.choice(devices)
        add("garbage", READINGS_TOPIC, d.device_id, d.tenant_id, b.when(), garbage_bytes(rng), "random bytes",
            "undecodable")  # fmt: skip
    for i in range(2 * k + 2):
        d, t = rng.choice(devices), b.when()
        if i % 2:
            s = rng.choice(b.fleet.sites)
            value = b.encode(RecordType.SIM_USAGE, _usage_record(s, s.sim.iccid, t, None), WireFormat.AVRO)
            detail = "Avro single-object SimUsage on meter.readings"
        else:
            value, detail = wrong_json(rng, t), "JSON object of an unrelated schema"
        add("wrong_schema", READINGS_TOPIC, d.device_id, d.tenant_id, t, value, detail, "schema_mismatch")
    d = rng.choice([d for d in devices if d.kind == "electricity_meter"] or devices)
    t = b.now - b.now % 1000
    big = {"device_id": d.device_id, "ts": t, "measurements": {"active_power": 1.0}, "event_id": "x" * 1_100_000,
           "seq": None, "quality": 0}  # fmt: skip
    value = b.encode(RecordType.METER_READING, big, WireFormat.JSON)
    add("oversize", READINGS_TOPIC, d.device_id, d.tenant_id, t, value, f"{len(value)} bytes", "oversize", b.when())
    for i in range(3 * k):
        s, t = rng.choice(b.fleet.sites), b.when()
        bad = s.sim.iccid[:-3] + "ABC" if i % 2 == 0 else s.sim.iccid[: 15 + i % 3]
        value = b.encode(RecordType.SIM_USAGE, _usage_record(s, bad, t, s.sim.plan_id), b.fmt())
        add("bad_iccid", SIM_USAGE_TOPIC, bad, s.tenant_id, t, value, f"iccid {bad!r}", "invalid_identifier")


def build_scenario(config: SimConfig, now_ms: int, encoder: Encoder) -> Scenario:
    """Simulate ``config.days`` of fleet history ending at ``now_ms`` (epoch ms UTC).

    ``encoder(record_type, record, wire_format) -> bytes`` is a
    :class:`pipeline.codecs.Encoder`. Same config, ``now_ms`` and encoder give
    byte-identical messages and truth.
    """
    b = Builder(config, int(now_ms), encoder)
    b.fleet = build_fleet(b.rng, config, b.start, b.now)
    if config.faults:
        b.plan = plan_faults(b.rng, b.fleet, config, b.start, b.now)
    regs = []
    for reg in registrations(
        b.fleet, b.rng, b.start, 300 * config.polls_per_batch if config.batch else 300, b.plan.ceilings, b.plan.iccids
    ):
        value = encoder(RecordType.DEVICE_REGISTRATION, reg, b.formats[0])
        regs.append(OutMessage(REGISTRY_TOPIC, reg["subject_id"].encode(), value))
        b.tally.registration(reg["tenant_id"], reg["kind"])
    b.tally.stats["unregistered_devices"] = sum(not d.registered for d in b.fleet.devices)
    for site in b.fleet.sites:
        _sim_usage(b, site, b.site(site))
    dlms_keys: dict[str, Any] = {}
    if config.dlms_meters:  # an RNG of its own: the rest of the scenario stays as it is
        dlms_regs, dlms_keys = simulate_dlms(b, config.seed)
        for reg in dlms_regs:
            value = encoder(RecordType.DEVICE_REGISTRATION, reg, b.formats[0])
            regs.append(OutMessage(REGISTRY_TOPIC, reg["subject_id"].encode(), value))
            b.tally.registration(reg["tenant_id"], reg["kind"])
    if config.faults:
        _message_faults(b)
    b.pending.sort(key=lambda p: (p[0], p[1]))
    truth = b.tally.result(config.seed, b.now, b.start)
    return Scenario(regs, [m for _, _, m in b.pending], truth, dlms_keys)
