"""Detection quality: alert episodes scored against the simulator's injected faults, per rule.

An episode (rule, subject, first_seen..last_seen) *detects* a fault when the fault maps to
that rule and subject and their time spans overlap within the rule's tolerance. Precision
= episodes that detect some fault / episodes; recall = faults detected by some episode /
faults. Rules the simulator does not inject have no recall; any episode of theirs on the
simulated fleet is a false positive. For ``gap``, ``cause_correct`` counts detected gaps
whose attributed cause matches the injected one (device silent vs SIM offline).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.anomaly.catalogue import RULES

__all__ = ["Episode", "Expected", "RuleScore", "expected_alerts", "score"]

HOUR = 3_600_000
# ground-truth fault kind -> rule that should detect it (rollover: counted as consumption, no alert)
FAULT_RULE = {"spike": "spike", "flatline": "flatline", "gap": "gap",
              "voltage_out_of_band": "voltage_out_of_band", "low_power_factor": "low_power_factor",
              "fuel_drop": "fuel_drop", "reset": "negative_delta", "sim_data_spike": "sim_data_spike",
              "sim_sms_flood": "sim_sms_flood", "sim_imei_change": "sim_imei_change",
              "sim_roaming": "sim_roaming"}  # fmt: skip
TOLERANCE_MS = {"sim_data_spike": 24 * HOUR, "sim_sms_flood": 24 * HOUR}  # daily / 24 h rules


@dataclass(frozen=True, slots=True)
class Episode:
    rule: str
    subject_id: str
    first_seen: int
    last_seen: int
    cause: str = ""


@dataclass(frozen=True, slots=True)
class Expected:
    rule: str
    subject_id: str
    start: int
    end: int
    cause: str = ""


@dataclass
class RuleScore:
    rule: str
    injected: int = 0
    detected: int = 0
    episodes: int = 0
    true_episodes: int = 0
    cause_correct: int = 0
    missed: list[Expected] = field(default_factory=list)
    false: list[Episode] = field(default_factory=list)

    @property
    def recall(self) -> float | None:
        return self.detected / self.injected if self.injected else None

    @property
    def precision(self) -> float | None:
        return self.true_episodes / self.episodes if self.episodes else None

    def as_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "injected": self.injected, "detected": self.detected, "episodes": self.episodes,
                "true_episodes": self.true_episodes, "recall": self.recall, "precision": self.precision,
                "cause_correct": self.cause_correct}  # fmt: skip


def expected_alerts(faults: Iterable[Mapping[str, Any]], sim_subject: Callable[[str, str], str]) -> list[Expected]:
    """What the rules should raise for the ground truth's faults.

    ``sim_subject(tenant, iccid)`` is the SIM's pseudonym (the alert subject). The truth lists
    one ``gap`` per silent device with its cause in the detail (``cause=device`` for a silent
    meter, ``cause=connectivity`` for every device behind an offline SIM); ``sim_offline``
    itself is the SIM side of the latter and no alert of its own.
    """
    out = []
    for f in faults:
        rule = FAULT_RULE.get(f["kind"])
        if rule is None:
            continue
        if RULES[rule].subject_type == "sim":
            out.append(Expected(rule, sim_subject(f["tenant_id"], f["iccid"]), f["ts"], f["end_ts"]))
        elif rule == "gap":
            cause = "connectivity" if "cause=connectivity" in str(f.get("detail")) else "device"
            out.append(Expected(rule, f["device_id"], f["ts"], f["end_ts"], cause))
        else:
            out.append(Expected(rule, f["device_id"], f["ts"], f["end_ts"]))
    return out


def _overlaps(e: Episode, x: Expected) -> bool:
    tol = TOLERANCE_MS.get(x.rule, HOUR)
    return (
        e.rule == x.rule
        and e.subject_id == x.subject_id
        and e.first_seen <= x.end + tol
        and x.start - tol <= e.last_seen
    )


def score(episodes: Iterable[Episode], expected: Iterable[Expected]) -> dict[str, RuleScore]:
    eps, exp = list(episodes), list(expected)
    scores = {r: RuleScore(r) for r in RULES}
    by_key: dict[tuple[str, str], list[Expected]] = {}
    for x in exp:
        by_key.setdefault((x.rule, x.subject_id), []).append(x)
        scores[x.rule].injected += 1
    hit: set[int] = set()
    for e in eps:
        s = scores[e.rule]
        s.episodes += 1
        matches = [x for x in by_key.get((e.rule, e.subject_id), []) if _overlaps(e, x)]
        if not matches:
            s.false.append(e)
            continue
        s.true_episodes += 1
        for x in matches:
            if id(x) not in hit:
                hit.add(id(x))
                s.detected += 1
                s.cause_correct += int(bool(x.cause) and x.cause == e.cause)
    for x in exp:
        if id(x) not in hit:
            scores[x.rule].missed.append(x)
    return scores
