"""Exact ground truth of a scenario, and the tally that computes it while messages are built.

Counting rules (what the pipeline must reproduce):

* one dead-letter record per (message, reading in message, reason); a reading's
  channels are checked one by one in the validator's order (future timestamp,
  too late, unknown quantity, non-finite, out of range) and a bad channel does
  not reject the good ones;
* accepted channels of a registered device are rows of its tenant; channels of an
  unregistered device give one ``unknown_device`` dead letter per reading;
* a re-sent reading's channels with equal values are exact duplicates (dropped,
  counted); a changed channel is one ``conflicting_duplicate`` dead letter;
* every SIM usage record of a registered SIM is a row; an ICCID failing only the
  Luhn check is accepted and counted in ``luhn_flagged``;
* ``consumption``: per registered device, cumulative quantity and UTC day, how far the
  register really advanced and which days an injected gap touches
  (:mod:`pipeline.simulate.energy`).
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.catalogue import Catalogue
from pipeline.simulate.energy import RegisterSeries, daily_advance

__all__ = ["GroundTruth", "Tally"]


@dataclass(frozen=True)
class GroundTruth:
    seed: int
    now_ms: int
    start_ms: int
    expected_rows: dict[str, dict[str, int]]  # table -> tenant -> rows
    expected_deadletter: dict[str, int]  # reason -> dead-letter records
    exact_duplicates_dropped: int  # reading channels dropped as exact duplicates
    luhn_flagged: int  # accepted SIM usage records whose ICCID fails Luhn
    messages: dict[str, int]  # topic suffix -> messages produced
    faults: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # non-faults: generator runs, refuels
    stats: dict[str, int] = field(default_factory=dict)
    # device x cumulative quantity x UTC day: advance, uncounted, gap, split (see pipeline.simulate.energy)
    consumption: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(asdict(self), indent=indent, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> GroundTruth:
        return cls(**json.loads(text))

    def total_rows(self, table: str) -> int:
        return sum(self.expected_rows.get(table, {}).values())


class Tally:
    """Accumulates counts while the scenario is built; :meth:`result` freezes them."""

    def __init__(self, catalogue: Catalogue, now_ms: int, lateness_ms: int, future_ms: int) -> None:
        self._bounds = {q.code: (q.min, q.max) for q in catalogue.quantities.values()}
        self._cumulative = set(catalogue.cumulative_codes())
        self._future = now_ms + future_ms
        self._oldest = now_ms - lateness_ms
        self.rows: dict[str, Counter[str]] = defaultdict(Counter)
        self.deadletter: Counter[str] = Counter()
        self.messages: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()
        self.exact = 0
        self.luhn = 0
        self.faults: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.registers: list[RegisterSeries] = []
        self.rejected_registers: set[tuple[str, str, int]] = set()  # (device, quantity, ts) refused

    def channel_reason(self, ts: int, code: str, value: float) -> str | None:
        if ts > self._future:
            return "future_timestamp"
        if ts < self._oldest:
            return "too_late"
        bounds = self._bounds.get(code)
        if bounds is None:
            return "unknown_quantity"
        if not math.isfinite(value):
            return "non_finite"
        if not bounds[0] <= value <= bounds[1]:
            return "out_of_range"
        return None

    def reading(
        self, tenant: str | None, ts: int, measurements: dict[str, float], device_id: str | None = None
    ) -> set[str]:
        """Count one reading (``tenant`` None = unregistered device); returns its dead-letter reasons."""
        reasons, good = set(), 0
        for code, value in measurements.items():
            r = self.channel_reason(ts, code, value)
            if r is None:
                good += 1
            else:
                reasons.add(r)
                if device_id is not None and code in self._cumulative:
                    self.rejected_registers.add((device_id, code, ts))
        if good and tenant is None:
            reasons.add("unknown_device")
        elif good:
            self.rows["readings"][tenant] += good
        self.deadletter.update(reasons)
        self.stats["readings"] += 1
        self.stats["values"] += len(measurements)
        return reasons

    def sim_record(self, tenant: str, period_start: int, *, luhn_failed: bool) -> None:
        """A SIM usage record with valid identifiers of a registered SIM."""
        if period_start < self._oldest:
            self.deadletter["too_late"] += 1
            return
        self.rows["sim_usage"][tenant] += 1
        self.luhn += luhn_failed

    def registration(self, tenant: str, kind: str) -> None:
        self.rows["device_registry"][tenant] += 1
        self.messages["registry.devices"] += 1
        self.stats[{"sim": "sims", "gateway": "gateways"}.get(kind, "devices")] += 1

    def duplicate(self, ts: int, measurements: dict[str, float], changed: str | None) -> None:
        """A re-sent reading of a registered device; ``changed`` = the channel whose value differs."""
        reasons = set()
        for code, value in measurements.items():
            r = self.channel_reason(ts, code, value)
            if r is not None:
                reasons.add(r)
            elif code == changed:
                reasons.add("conflicting_duplicate")
            else:
                self.exact += 1
        self.deadletter.update(reasons)
        self.stats["readings"] += 1
        self.stats["values"] += len(measurements)

    def fault(
        self,
        kind: str,
        topic: str,
        tenant: str,
        ts: int,
        detail: str,
        reason: str | None,
        *,
        device_id: str | None = None,
        iccid: str | None = None,
        end_ts: int | None = None,
    ) -> None:
        self.faults.append({"kind": kind, "topic": topic, "tenant_id": tenant, "device_id": device_id,
                            "iccid": iccid, "ts": ts, "end_ts": ts if end_ts is None else end_ts,
                            "detail": detail, "expected_reason": reason})  # fmt: skip

    def result(self, seed: int, now_ms: int, start_ms: int) -> GroundTruth:
        tables = ("readings", "sim_usage", "device_registry")
        faults = sorted(self.faults, key=lambda f: (f["ts"], f["kind"], f["device_id"] or f["iccid"] or ""))
        return GroundTruth(
            seed=seed, now_ms=now_ms, start_ms=start_ms,
            expected_rows={t: dict(sorted(self.rows[t].items())) for t in tables},
            expected_deadletter=dict(sorted(self.deadletter.items())),
            exact_duplicates_dropped=self.exact, luhn_flagged=self.luhn,
            messages=dict(sorted(self.messages.items())), faults=faults,
            events=sorted(self.events, key=lambda e: (e["ts"], e["kind"], e["device_id"])),
            stats=dict(sorted(self.stats.items())),
            consumption=daily_advance(self.registers, self.rejected_registers),
        )  # fmt: skip
