"""Smart meters that push encrypted DLMS/COSEM frames on ``meter.frames`` (SimConfig.dlms_meters).

Each meter is an electricity meter at a site (Austrian sites first: the push format is
the Austrian customer interface), registered like every other device with ``key_id`` =
its system title, and pushes one data-notification every 5 minutes, encrypted with its
own GUEK (and AK). Meters cycle through the variants the decoder must handle:

====  ===========  ====================  =====================================
 i    body layout  security              Kafka messages per push
====  ===========  ====================  =====================================
 0    nested       encryption only       one (all M-Bus frames concatenated)
 1    flat         authenticated (AK)    one
 2    nested       authenticated (AK)    one per M-Bus frame (same key)
 3    flat         encryption only       one per M-Bus frame
====  ===========  ====================  =====================================

and through the header date-time forms (bare, octet string, absent + clock object).
The keys go to :attr:`Scenario.dlms_keys` (the key-file format of
:class:`pipeline.dlms.KeyStore`), which the demo writes to the worker's key file.

Faults (``config.faults``), one dead letter per Kafka message they concern, each one a
fault entry: a push encrypted with a wrong key (``decrypt_failed`` / ``auth_failed``),
an earlier push sent again (``replayed_frame``), a corrupted checksum (``bad_checksum``),
a split push whose last frame never comes (``incomplete_frame``), and one extra,
registered meter whose key is not in the key file (``unknown_key``, the last 30 minutes
only -- re-processable once its key is added, see docs/dlms.md). Two pushes report a
doubtful clock: accepted, flagged ``CLOCK_DOUBTFUL``.

All randomness comes from a generator of its own, so adding DLMS meters leaves the
rest of the scenario byte for byte unchanged.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from pipeline.catalogue import load_catalogue
from pipeline.dlms import Layout, Push, Register, encode_frames
from pipeline.dlms.notification import scale
from pipeline.simulate.config import DAY_MS, FRAMES_TOPIC, MINUTE_MS
from pipeline.simulate.fleet import Device, Site, _device_params
from pipeline.simulate.profiles import simulate_device
from pipeline.simulate.timeline import make_timeline

__all__ = ["DlmsMeter", "simulate_dlms"]

_MAKES = (("KFM", "Kaifa MA309M"), ("SAG", "Sagemcom T210-D"), ("ISK", "Iskraemeco AM550"))
_CLOCKS = ("bare", "octet_string", "absent")
_SEED_SALT = 0xD1_45_C0_5E
_KEYLESS_MS = 30 * MINUTE_MS


@dataclass(frozen=True)
class DlmsMeter:
    meter_number: str
    system_title: str  # 16 upper-case hex digits
    key: bytes
    auth_key: bytes | None
    layout: Layout
    split: bool  # one Kafka message per M-Bus frame
    header_clock: str
    model: str
    site: Site
    device: Device
    in_key_file: bool = True

    @property
    def key_entry(self) -> dict[str, str]:
        entry = {"system_title": self.system_title, "meter_number": self.meter_number, "guek": self.key.hex()}
        if self.auth_key is not None:
            entry["ak"] = self.auth_key.hex()
        return entry


def _meters(rng: random.Random, count: int, sites: list[Site]) -> list[DlmsMeter]:
    austrian = [s for s in sites if s.country.iso == "AT"] or sites
    out = []
    for i in range(count):
        site = austrian[i % len(austrian)]
        flag, model = _MAKES[i % len(_MAKES)]
        title = flag.encode() + rng.randbytes(5)
        number = f"1{flag}{rng.randrange(10**9, 10**10)}"
        authenticated = (i + i // 2) % 2 == 1
        params, rated, _ = _device_params(rng, "electricity_meter", site.commercial, "sub", site.solar, site.country)
        device = Device(number, "electricity_meter", site.tenant_id, site.site_id, 300, rated, None, params)
        out.append(
            DlmsMeter(
                meter_number=number,
                system_title=title.hex().upper(),
                key=rng.randbytes(16),
                auth_key=rng.randbytes(16) if authenticated else None,
                layout=Layout.FLAT if i % 2 else Layout.NESTED,
                split=(i // 2) % 2 == 1,
                header_clock=_CLOCKS[i % len(_CLOCKS)],
                model=model,
                site=site,
                device=device,
            )
        )
    return out


def _registration(m: DlmsMeter, updated_at: int) -> dict[str, Any]:
    s = m.site
    return {
        "subject_id": m.meter_number, "subject_type": "device", "kind": "electricity_meter",
        "tenant_id": s.tenant_id, "site_id": s.site_id, "branch": s.branch, "timezone": s.country.timezone,
        "latitude": s.latitude, "longitude": s.longitude, "gateway_id": s.gateway_id, "sim_iccid": None,
        "key_id": m.system_title, "rated_power_w": m.device.rated_power_w, "expected_period_s": 300,
        "nominal_voltage": 230.0, "nominal_frequency": 50.0, "tank_capacity_l": None, "register_ceilings": {},
        "tariff_id": s.tariff_id, "tariff": s.tariff, "plan_id": None, "plan_allowance_bytes": None,
        "plan_cycle_start_day": None, "stationary": None, "event": "registered", "replaced": None,
        "attributes": {"model": m.model, "interface": "dlms-mbus", "layout": m.layout.value,
                       "security": "authenticated" if m.auth_key else "encryption-only",
                       "profile": "commercial" if s.commercial else "residential", "role": "sub"},
        "updated_at": updated_at,
    }  # fmt: skip


def _registers(m: dict[str, float], reactive: tuple[float, float]) -> tuple[Register, ...]:
    p = m["active_power"]
    regs = [
        Register.of("1-0:1.8.0", m["active_energy_import"], unit=30),
        Register.of("1-0:2.8.0", m.get("active_energy_export", 0.0), unit=30),
        Register.of("1-0:3.8.0", reactive[0], unit=32),
        Register.of("1-0:4.8.0", reactive[1], unit=32),
        Register.of("1-0:1.7.0", max(p, 0.0), unit=27),
        Register.of("1-0:2.7.0", max(-p, 0.0), unit=27),
    ]
    for n, (v, a) in enumerate(((32, 31), (52, 51), (72, 71)), start=1):
        regs.append(Register.of(f"1-0:{v}.7.0", m[f"voltage_l{n}"], scaler=-1, unit=35))
        regs.append(Register.of(f"1-0:{a}.7.0", m[f"current_l{n}"], scaler=-2, unit=33))
    regs.append(Register.of("1-0:13.7.0", m["power_factor"], scaler=-3, unit=255))
    return tuple(regs)


def _clock(tz: ZoneInfo, ts: int) -> tuple[int, int]:
    """(deviation minutes = UTC - local, clock status with the DST bit) at ``ts``."""
    local = datetime.fromtimestamp(ts / 1000, UTC).astimezone(tz)
    offset = local.utcoffset()
    dst = local.dst()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    return -minutes, 0x80 if dst else 0x00


@dataclass
class _Push:
    meter: DlmsMeter
    counter: int
    ts: int
    send: int
    push: Push
    measurements: dict[str, float]  # what the pipeline decodes (catalogue code -> value)


def _pushes(rng: random.Random, m: DlmsMeter, start_ms: int, now_ms: int, first_ms: int) -> list[_Push]:
    site = m.site
    tl = make_timeline(rng, start_ms, now_ms, site.country.timezone, site.latitude)
    series = simulate_device(rng, m.device, site, tl, None)
    by_obis = load_catalogue().by_obis()
    tz = ZoneInfo(site.country.timezone)
    counter = rng.randrange(1, 2**24)
    q_imp, q_exp = rng.uniform(1e5, 5e6), rng.uniform(1e3, 5e4)
    out = []
    for n, (t, values) in enumerate(zip(series.ts, series.values, strict=True)):
        p, pf = values["active_power"], values["power_factor"]
        if n:
            q = abs(p) * math.tan(math.acos(min(pf, 0.9999))) * 300 / 3600
            q_imp, q_exp = (q_imp + q, q_exp) if p >= 0 else (q_imp, q_exp + q)
        if t < first_ms:
            continue
        regs = _registers(values, (q_imp, q_exp))
        deviation, status = _clock(tz, t)
        push = Push(ts_ms=t, registers=regs, meter_number=m.meter_number, deviation_minutes=deviation,
                    clock_status=status, invoke_id=counter & 0xFFFFFFFF, header_clock=m.header_clock,
                    clock_in_body=m.header_clock == "absent" or m.layout is Layout.NESTED)  # fmt: skip
        decoded = {by_obis[r.obis]: scale(r.raw, r.scaler) for r in regs}
        out.append(_Push(m, counter, t, t + rng.randint(1_000, 4_000), push, decoded))
        counter += 1
    return out


def _encode(p: _Push, key: bytes | None = None, auth_key: bytes | None = None) -> list[bytes]:
    m = p.meter
    return encode_frames(p.push, system_title=m.system_title, frame_counter=p.counter, key=key or m.key,
                         auth_key=auth_key or m.auth_key, layout=m.layout)  # fmt: skip


def _values(m: DlmsMeter, frames: list[bytes]) -> list[bytes]:
    return list(frames) if m.split else [b"".join(frames)]


def simulate_dlms(b: Any, rng_seed: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Emit the DLMS meters' frames through the builder ``b``; return (registrations, key file mapping).

    ``b`` is the scenario :class:`~pipeline.simulate.builder.Builder` (its ``emit``,
    ``tally``, ``fleet``, ``start``, ``now`` and ``config`` are used, its RNG is not).
    """
    cfg = b.config
    rng = random.Random(rng_seed ^ _SEED_SALT)
    sites = list(b.fleet.sites)
    meters = _meters(rng, cfg.dlms_meters + (1 if cfg.faults else 0), sites)
    if cfg.faults:  # the last one is newly installed and its key has not arrived yet
        meters[-1] = replace(meters[-1], in_key_file=False, split=False)
    tally = b.tally
    registrations = [_registration(m, b.start - rng.randrange(DAY_MS, 400 * DAY_MS)) for m in meters]
    plan: dict[tuple[str, int], str] = {}
    pushes: dict[str, list[_Push]] = {}
    for m in meters:
        first = b.start if m.in_key_file else max(b.start, b.now - _KEYLESS_MS)
        pushes[m.meter_number] = _pushes(rng, m, b.start, b.now, first)
    keyed = [m for m in meters if m.in_key_file]
    if cfg.faults and keyed:
        _plan_faults(rng, keyed, pushes, plan)

    def reject(p: _Push, values: list[bytes], kind: str, reason: str, detail: str, send: int) -> None:
        for v in values:
            b.emit(send, FRAMES_TOPIC, p.meter.meter_number, v)
            tally.fault(kind, FRAMES_TOPIC, p.meter.site.tenant_id, p.ts, detail, reason,
                        device_id=p.meter.meter_number)  # fmt: skip
            tally.deadletter[reason] += 1

    wrong = bytes(16 * [0x5A])
    for m in meters:
        tenant = m.site.tenant_id
        series = pushes[m.meter_number]
        for k, p in enumerate(series):
            fault = plan.get((m.meter_number, k))
            if not m.in_key_file:
                reject(p, _values(m, _encode(p)), "dlms_unknown_key", "unknown_key",
                       f"system title {m.system_title}: key not in the key file yet", p.send)  # fmt: skip
                continue
            if fault == "wrong_key":  # the same push, encrypted with a key that is not the meter's
                reason = "auth_failed" if m.auth_key else "decrypt_failed"
                reject(p, _values(m, _encode(p, key=wrong)), f"dlms_{reason}", reason,
                       f"push {p.counter} encrypted with another key", p.send)  # fmt: skip
                continue
            if fault == "clock_doubtful":
                p.push = replace(p.push, clock_status=p.push.clock_status | 0x02)
                tally.fault("dlms_clock_doubtful", FRAMES_TOPIC, tenant, p.ts, f"push {p.counter}: clock status "
                            "doubtful, accepted and flagged", None, device_id=m.meter_number)  # fmt: skip
            frames = _encode(p)
            if fault == "bad_checksum":
                value = bytearray(b"".join(frames))
                value[-2] ^= 0xFF
                reject(p, [bytes(value)], "dlms_bad_checksum", "bad_checksum", f"push {p.counter}: checksum "
                       "byte of the last frame corrupted", p.send)  # fmt: skip
                continue
            if fault == "incomplete" and len(frames) > 1:
                reject(p, frames[:-1], "dlms_incomplete_frame", "incomplete_frame",
                       f"push {p.counter}: segment {len(frames) - 1} never sent", p.send)  # fmt: skip
                continue
            values = _values(m, frames)
            for v in values:
                b.emit(p.send, FRAMES_TOPIC, m.meter_number, v)
            tally.reading(tenant, p.ts, p.measurements)
            tally.stats["dlms_pushes"] += 1
            if fault == "replay":
                later = p.send + rng.randint(20, 180) * MINUTE_MS
                later = min(later, max(p.send, b.now - MINUTE_MS))
                reject(p, values, "dlms_replayed_frame", "replayed_frame",
                       f"push {p.counter} sent again {(later - p.send) / 60_000:.0f} min later", later)  # fmt: skip
    tally.stats["dlms_meters"] += len(meters)
    keys = {"meter": [m.key_entry for m in keyed]}
    return registrations, keys


def _plan_faults(
    rng: random.Random, meters: list[DlmsMeter], pushes: dict[str, list[_Push]], plan: dict[tuple[str, int], str]
) -> None:
    """At most one fault per push, in the middle half of a meter's history (never its last push)."""

    def place(kind: str, candidates: list[DlmsMeter]) -> None:
        candidates = [m for m in candidates if len(pushes[m.meter_number]) >= 8]
        if not candidates:
            return
        m = rng.choice(candidates)
        n = len(pushes[m.meter_number])
        for _ in range(50):
            k = rng.randrange(n // 4, 3 * n // 4)
            if all((m.meter_number, j) not in plan for j in (k - 1, k, k + 1)):
                plan[(m.meter_number, k)] = kind
                return

    place("wrong_key", [m for m in meters if m.auth_key is None])
    place("wrong_key", [m for m in meters if m.auth_key is not None])
    place("replay", meters)
    place("bad_checksum", [m for m in meters if not m.split])
    place("incomplete", [m for m in meters if m.split])
    place("clock_doubtful", meters)
    place("clock_doubtful", meters)
