"""The scenario builder's state and the meter-reading messages of one site (gateway batches or single readings)."""

from __future__ import annotations

import bisect
import itertools
import random
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from pipeline.catalogue import load_catalogue
from pipeline.codecs import RecordType, WireFormat
from pipeline.simulate.config import DAY_MS, HOUR_MS, MINUTE_MS, READINGS_TOPIC, OutMessage, SimConfig
from pipeline.simulate.energy import RegisterSeries
from pipeline.simulate.faults import CEILINGS, RECORD_KINDS, DataFault, FaultPlan, corrupt
from pipeline.simulate.fleet import Device, Fleet, Site
from pipeline.simulate.profiles import simulate_device
from pipeline.simulate.timeline import TICK_MS, Series, make_timeline
from pipeline.simulate.truth import Tally

__all__ = ["Builder", "Encoder"]

Encoder = Callable[[RecordType, dict[str, Any], WireFormat], bytes]
_KINDS = list(RECORD_KINDS)
_CUM = list(itertools.accumulate(w for w, _ in RECORD_KINDS.values()))


class Builder:
    def __init__(self, config: SimConfig, now_ms: int, encoder: Encoder) -> None:
        self.config, self.now, self.encode = config, now_ms, encoder
        self.rng = random.Random(config.seed)
        self.start = now_ms - int(config.days * DAY_MS)
        self.oldest = now_ms - int(config.lateness_days * DAY_MS)  # older readings are rejected: no faults there
        catalogue = load_catalogue()
        self.tally = Tally(catalogue, now_ms, int(config.lateness_days * DAY_MS),
                           config.future_tolerance_s * 1000)  # fmt: skip
        self.cumulative = set(catalogue.cumulative_codes())
        self.formats = [WireFormat(f) for f in config.formats]
        self.cum_weights = list(itertools.accumulate(config.weights()))
        self.pending: list[tuple[int, int, OutMessage]] = []
        self.fleet = Fleet((), ())
        self.plan = FaultPlan()

    def fmt(self) -> WireFormat:
        x = self.rng.random() * self.cum_weights[-1]
        return self.formats[bisect.bisect_right(self.cum_weights, x)]

    def emit(self, send_ms: int, topic: str, key: str, value: bytes) -> OutMessage:
        msg = OutMessage(topic, key.encode(), value)
        self.pending.append((send_ms, len(self.pending), msg))
        self.tally.messages[topic] += 1
        return msg

    def when(self) -> int:
        return self.rng.randrange(self.start, self.now)

    # -- meter readings of one site ------------------------------------------------------------
    def site(self, site: Site) -> dict[int, list[int]]:
        """Emit the site's reading messages; returns its gateway traffic per hour ([bytes, messages])."""
        rng, tally, plan = self.rng, self.tally, self.plan
        tl = make_timeline(rng, self.start, self.now, site.country.timezone, site.latitude)
        offline = plan.offline.get(site.site_id)
        readings: list[tuple[int, int, Device, dict[str, Any]]] = []
        for n, d in enumerate(site.devices):
            fault = plan.device.get(d.device_id)
            series = simulate_device(rng, d, site, tl, fault)
            for rec in series.records:
                row = {
                    "kind": rec.get("kind") or (fault.kind if fault else ""),
                    "device_id": d.device_id,
                    "tenant_id": d.tenant_id,
                    "ts": rec["ts"],
                    "end_ts": rec["end_ts"],
                    "detail": rec["detail"],
                }
                if rec.get("event"):
                    tally.events.append(row)
                else:
                    tally.fault(row["kind"], READINGS_TOPIC, d.tenant_id, rec["ts"], rec["detail"], None,
                                device_id=d.device_id, end_ts=rec["end_ts"])  # fmt: skip
            silent = [(s, "device") for s in (plan.gaps.get(d.device_id),) if s]
            silent += [(offline, "connectivity")] if offline else []
            for (a, b), cause in silent if d.registered else ():
                detail = f"no readings for {(b - a) // HOUR_MS} h, cause={cause}"
                tally.fault("gap", READINGS_TOPIC, d.tenant_id, a, detail, None, device_id=d.device_id,
                            end_ts=b - d.period_s * 1000)  # fmt: skip
            if d.registered:
                self.registers(d, series, fault, [s for s, _ in silent])
            seq0 = rng.randrange(1, 1_000_000)
            for i, (t, m) in enumerate(zip(series.ts, series.values, strict=True)):
                if t >= d.first_ms and not any(a <= t < b for (a, b), _ in silent):
                    r = {"device_id": d.device_id, "ts": t, "measurements": m, "event_id": None,
                         "seq": seq0 + i, "quality": 0}  # fmt: skip
                    readings.append((t, n, d, r))
        readings.sort(key=lambda x: (x[0], x[1]))
        traffic: dict[int, list[int]] = defaultdict(lambda: [0, 0])
        block = TICK_MS * self.config.polls_per_batch
        if self.config.batch:
            groups = [list(g) for _, g in itertools.groupby(readings, key=lambda x: x[0] // block)]
        else:
            groups = [[x] for x in readings]
        for group in groups:
            self.message(site, group, block, offline, traffic)
        return traffic

    def registers(self, d: Device, series: Series, fault: DataFault | None, silent: list[tuple[int, int]]) -> None:
        """Record the device's cumulative registers for the consumption ground truth."""
        if not series.ts:
            return
        faulted = CEILINGS.get(d.kind, ("", 0.0))[0]
        realised = [r["ts"] for r in series.records if not r.get("event")]
        kind = fault.kind if fault and fault.kind in ("rollover", "reset") and realised else None
        sent = tuple(not any(a <= t < b for a, b in silent) for t in series.ts)
        for code in sorted(self.cumulative & series.values[0].keys()):
            hit = kind is not None and code == faulted
            self.tally.registers.append(RegisterSeries(
                d.device_id, d.tenant_id, code, tuple(series.ts), tuple(v[code] for v in series.values), sent,
                kind if hit else None, realised[0] if hit else None,
                fault.params.get("ceiling") if hit and fault else None))  # fmt: skip

    def message(
        self,
        site: Site,
        group: list[tuple[int, int, Device, dict[str, Any]]],
        block: int,
        offline: tuple[int, int] | None,
        traffic: dict[int, list[int]],
    ) -> None:
        rng, tally, cfg = self.rng, self.tally, self.config
        batch = cfg.batch
        last = group[-1][0]
        send = (last // block * block + block - TICK_MS if batch else last) + rng.randint(3_000, 60_000)
        out: list[tuple[Device, dict[str, Any]]] = []
        extra: list[tuple[Device, dict[str, Any]]] = []
        dups: list[tuple[str, Device, dict[str, Any]]] = []
        force_avro = False
        for t, _, d, r in group:
            out.append((d, r))
            if not d.registered:
                tally.fault("unknown_device", READINGS_TOPIC, d.tenant_id, t, "device is not registered",
                            "unknown_device", device_id=d.device_id)  # fmt: skip
                continue
            if not (cfg.faults and rng.random() < cfg.fault_rate) or t < self.oldest:
                continue
            kind = _KINDS[bisect.bisect_right(_CUM, rng.random() * _CUM[-1])]
            reason = RECORD_KINDS[kind][1]
            if kind in ("out_of_range", "non_finite", "unknown_quantity"):
                r["measurements"], detail = corrupt(rng, kind, d.kind, r["measurements"])
                force_avro |= kind == "non_finite"  # NaN/inf are not JSON
                tally.fault(kind, READINGS_TOPIC, d.tenant_id, t, detail, reason, device_id=d.device_id)
            elif kind in ("future_timestamp", "too_late"):
                p = d.period_s * 1000
                t2 = self.now + DAY_MS if kind == "future_timestamp" else self.now - 40 * DAY_MS
                t2 = t2 - t2 % p + rng.randrange(0, 24) * p * (1 if kind == "future_timestamp" else -1)
                extra.append((d, {**r, "ts": t2, "seq": None}))
                tally.fault(kind, READINGS_TOPIC, d.tenant_id, t2, f"extra reading, device clock at {t2}",
                            reason, device_id=d.device_id)  # fmt: skip
            else:
                dups.append((kind, d, r))
        if cfg.faults and rng.random() < cfg.fault_rate:
            delay = rng.randint(60, 36 * 60) * MINUTE_MS
            send += delay
            who = site.gateway_id if batch else group[0][2].device_id
            tally.fault("late", READINGS_TOPIC, site.tenant_id, group[0][0], f"{len(group)} reading(s) delivered "
                        f"{delay / HOUR_MS:.1f} h late", None, device_id=who, end_ts=last)  # fmt: skip
        if offline and offline[0] <= send < offline[1]:
            send = offline[1] + rng.randint(3_000, 60_000)
        if batch:
            self.readings_msg(site, send, out + extra, traffic, force_avro)
        else:
            for d, r in out + extra:
                self.readings_msg(site, send, [(d, r)], traffic, force_avro)
        for kind, d, r in dups:
            dup_send = send + rng.randint(10, 360) * MINUTE_MS
            if offline and offline[0] <= dup_send < offline[1]:
                dup_send = offline[1] + rng.randint(3_000, 60_000)
            m, detail, changed = r["measurements"], "exact copy", None
            if kind == "conflicting_duplicate":
                m, detail = corrupt(rng, kind, d.kind, m)
                changed = detail.split("=", 1)[0]
            self.readings_msg(site, dup_send, [(d, {**r, "measurements": m})], traffic, False, dup=changed or "")
            tally.fault(kind, READINGS_TOPIC, d.tenant_id, r["ts"], f"re-sent {(dup_send - send) / HOUR_MS:.1f} h "
                        f"later: {detail}", RECORD_KINDS[kind][1], device_id=d.device_id)  # fmt: skip

    def readings_msg(
        self,
        site: Site,
        send: int,
        items: list[tuple[Device, dict[str, Any]]],
        traffic: dict[int, list[int]],
        force_avro: bool,
        dup: str | None = None,
    ) -> None:
        fmt = WireFormat.AVRO if force_avro else self.fmt()
        if self.config.batch:
            record = {"gateway_id": site.gateway_id, "sent_at": min(send, self.now), "readings": [r for _, r in items]}
            value, key = self.encode(RecordType.METER_READING_BATCH, record, fmt), site.gateway_id
        else:
            value, key = self.encode(RecordType.METER_READING, items[0][1], fmt), items[0][0].device_id
        self.emit(send, READINGS_TOPIC, key, value)
        hour = traffic[send - send % HOUR_MS]
        hour[0] += len(value) + len(key)
        hour[1] += 1
        for d, r in items:
            if dup is None:
                self.tally.reading(d.tenant_id if d.registered else None, r["ts"], r["measurements"], d.device_id)
            else:
                self.tally.duplicate(r["ts"], r["measurements"], dup or None)
