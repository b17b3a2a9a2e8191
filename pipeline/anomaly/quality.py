"""Detection quality: alert episodes scored against the simulator's injected faults, per rule.

An episode (rule, subject, first_seen..last_seen) *detects* a fault when the fault maps to
that rule and subject and their time spans overlap within the rule's tolerance. Precision
= episodes that detect some fault / episodes; recall = faults detected by some episode /
faults. Rules the simulator does not inject have no recall; any episode of theirs on the
simulated fleet is a false positive. For ``gap``, ``cause_correct`` counts detected gaps
whose attributed cause matches the injected one (device silent vs SIM offline).

Two things are reported but not scored either way:

* **warm-up faults**: a ``sim_data_spike`` on a day with fewer than ``min_history_days``
  days of the SIM's data before it; a ``spike`` in an interval with less than a day of the
  device's data before it, or no earlier day of the same type (weekday / weekend,
  site-local) within ``window_days``. The rules, by their definitions, do not judge such
  intervals, so they cannot count against recall (an episode that matches one still counts
  as true);
* **late deliveries**: a ``gap`` episode of a device whose missed readings were delivered
  late (a ``late`` upload of the device or its gateway overlaps the episode). In arrival
  order the device really was silent for longer than the limit when two uploads in a row
  come late, which is what the rule watches; the simulator names that ``late``, not a gap.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from pipeline.anomaly.catalogue import RULES
from pipeline.anomaly.interval_history import IMS

__all__ = ["Episode", "Expected", "RuleScore", "expected_alerts", "late_deliveries", "score"]

HOUR = 3_600_000
DAY = 24 * HOUR
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
    warmup: bool = False  # before the rule can have the history it needs: not counted in recall


@dataclass
class RuleScore:
    rule: str
    injected: int = 0  # scored faults (warm-up ones not included)
    detected: int = 0
    episodes: int = 0  # scored episodes (those explained by late deliveries not included)
    true_episodes: int = 0
    cause_correct: int = 0
    warmup: int = 0
    missed: list[Expected] = field(default_factory=list)
    false: list[Episode] = field(default_factory=list)
    late: list[Episode] = field(default_factory=list)

    @property
    def recall(self) -> float | None:
        return self.detected / self.injected if self.injected else None

    @property
    def precision(self) -> float | None:
        return self.true_episodes / self.episodes if self.episodes else None

    def as_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "injected": self.injected, "detected": self.detected, "episodes": self.episodes,
                "true_episodes": self.true_episodes, "recall": self.recall, "precision": self.precision,
                "cause_correct": self.cause_correct, "warmup": self.warmup,
                "late_explained": len(self.late)}  # fmt: skip


def _weekend(ts: int, tz: ZoneInfo) -> bool:
    return datetime.fromtimestamp(ts / 1000, UTC).astimezone(tz).weekday() >= 5


def _warmup(rule: str, ts: int, start_ms: int | None, timezone: str = "UTC") -> bool:
    """Default parameters. ``sim_data_spike``: a daily SIM volume compared with fewer than ``min_history_days``
    earlier days of data (the first hourly record is the first full hour of the fleet). ``spike``: the
    interval of the reading at ``ts`` has less than a day of data before it, or no earlier day of its type
    within the window whose same time of day (± ``tod_window_minutes``) has data."""
    if start_ms is None:
        return False
    p = RULES[rule].params
    if rule == "sim_data_spike":
        first_day = -(-start_ms // HOUR) * HOUR // DAY
        return ts // DAY - first_day < int(p["min_history_days"])  # type: ignore[call-overload]
    if rule != "spike":
        return False
    start = (ts - 1) // IMS * IMS  # the interval that the reading's consumption falls in
    if start - start_ms < DAY:
        return True
    tz, reach = ZoneInfo(timezone), int(p["tod_window_minutes"]) * 60_000  # type: ignore[call-overload]
    days = range(1, int(p["window_days"]) + 1)  # type: ignore[call-overload]
    return not any(start - d * DAY - reach >= start_ms and _weekend(start - d * DAY, tz) == _weekend(start, tz)
                   for d in days)  # fmt: skip


def expected_alerts(
    faults: Iterable[Mapping[str, Any]],
    sim_subject: Callable[[str, str], str],
    *,
    start_ms: int | None = None,
    timezones: Mapping[str, str] | None = None,
) -> list[Expected]:
    """What the rules should raise for the ground truth's faults.

    ``sim_subject(tenant, iccid)`` is the SIM's pseudonym (the alert subject). The truth lists
    one ``gap`` per silent device with its cause in the detail (``cause=device`` for a silent
    meter, ``cause=connectivity`` for every device behind an offline SIM); ``sim_offline``
    itself is the SIM side of the latter and no alert of its own. With the fleet's
    ``start_ms``, faults in a rule's warm-up are marked (``Expected.warmup``); ``timezones`` (device id ->
    IANA zone, default UTC) gives a meter's day type.
    """
    out = []
    for f in faults:
        rule = FAULT_RULE.get(f["kind"])
        if rule is None:
            continue
        if RULES[rule].subject_type == "sim":
            out.append(Expected(rule, sim_subject(f["tenant_id"], f["iccid"]), f["ts"], f["end_ts"],
                                warmup=_warmup(rule, f["ts"], start_ms)))  # fmt: skip
        elif rule == "gap":
            cause = "connectivity" if "cause=connectivity" in str(f.get("detail")) else "device"
            out.append(Expected(rule, f["device_id"], f["ts"], f["end_ts"], cause))
        else:
            warm = _warmup(rule, f["ts"], start_ms, (timezones or {}).get(f["device_id"], "UTC"))
            out.append(Expected(rule, f["device_id"], f["ts"], f["end_ts"], warmup=warm))
    return out


def late_deliveries(
    faults: Iterable[Mapping[str, Any]], gateways: Mapping[str, str]
) -> dict[str, list[tuple[int, int]]]:
    """Device id -> event-time spans of its readings that were delivered late (its own ``late``
    uploads, and its gateway's: ``gateways`` maps a device to its gateway)."""
    spans: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for f in faults:
        if f["kind"] == "late" and f.get("device_id"):
            spans[f["device_id"]].append((f["ts"], f["end_ts"]))
    out = {d: list(spans[g]) for d, g in gateways.items() if g in spans}
    for d, s in spans.items():
        out.setdefault(d, []).extend(s)
    return out


def _overlaps(e: Episode, x: Expected) -> bool:
    tol = TOLERANCE_MS.get(x.rule, HOUR)
    return (
        e.rule == x.rule
        and e.subject_id == x.subject_id
        and e.first_seen <= x.end + tol
        and x.start - tol <= e.last_seen
    )


def score(episodes: Iterable[Episode], expected: Iterable[Expected],
          late: Mapping[str, Sequence[tuple[int, int]]] | None = None) -> dict[str, RuleScore]:  # fmt: skip
    """Per rule scores; ``late`` (from :func:`late_deliveries`) sets gap episodes it explains aside."""
    eps, exp = list(episodes), list(expected)
    scores = {r: RuleScore(r) for r in RULES}
    by_key: dict[tuple[str, str], list[Expected]] = {}
    for x in exp:
        by_key.setdefault((x.rule, x.subject_id), []).append(x)
        if x.warmup:
            scores[x.rule].warmup += 1
        else:
            scores[x.rule].injected += 1
    hit: set[int] = set()
    for e in eps:
        s = scores[e.rule]
        matches = [x for x in by_key.get((e.rule, e.subject_id), []) if _overlaps(e, x)]
        if not matches:
            spans = (late or {}).get(e.subject_id, ()) if e.rule == "gap" else ()
            if any(a <= e.last_seen and e.first_seen <= b for a, b in spans):
                s.late.append(e)
            else:
                s.episodes += 1
                s.false.append(e)
            continue
        s.episodes += 1
        s.true_episodes += 1
        for x in matches:
            if id(x) not in hit and not x.warmup:
                s.detected += 1
                s.cause_correct += int(bool(x.cause) and x.cause == e.cause)
            hit.add(id(x))
    for x in exp:
        if id(x) not in hit and not x.warmup:
            scores[x.rule].missed.append(x)
    return scores
