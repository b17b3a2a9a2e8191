"""What a rule produces and what the lifecycle publishes.

A rule turns one batch of input (readings, intervals, register events or SIM usage)
into an *evaluation frame*: one row per (subject, rule, evaluated time) saying whether
the rule's condition held there. Rules are columnar and keep their own bounded
state; the :class:`~pipeline.anomaly.lifecycle.AlertTracker` turns evaluations into
transitions (raised / updated / cleared) of alert episodes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

import polars as pl

__all__ = [
    "EVALUATION_SCHEMA",
    "Severity",
    "State",
    "Transition",
    "empty_evaluations",
    "evaluations",
]


class Severity(IntEnum):
    """Ordered, so an episode's severity can be compared; ``str(s)`` is the wire name."""

    INFO = 1
    WARNING = 2
    CRITICAL = 3

    def __str__(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, name: str) -> Severity:
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValueError(f"unknown severity {name!r} (info, warning, critical)") from None


class State(StrEnum):
    RAISED = "raised"
    UPDATED = "updated"
    CLEARED = "cleared"


# One row per evaluation. ``firing`` = the rule's condition held at ``ts_ms`` (event time of the
# sample, interval or window end); ``severity`` is the severity *if* firing (1..3, Severity values).
# ``kind`` is "condition" (clears after clear_after false evaluations) or "event" (clears after the
# rule's quiet period without a new firing evaluation).
EVALUATION_SCHEMA: dict[str, pl.DataType] = {
    "tenant_id": pl.Utf8(),
    "site_id": pl.Utf8(),
    "subject_id": pl.Utf8(),
    "subject_type": pl.Utf8(),  # device | sim
    "rule": pl.Utf8(),
    "ts_ms": pl.Int64(),
    "firing": pl.Boolean(),
    "severity": pl.UInt8(),
    "observed": pl.Float64(),
    "threshold": pl.Float64(),
    "message": pl.Utf8(),
}


_NO_EVALUATIONS = pl.DataFrame(schema=EVALUATION_SCHEMA)  # built once: a schema'd frame costs ~0.5 ms


def empty_evaluations() -> pl.DataFrame:
    return _NO_EVALUATIONS.clone()


def evaluations(frame: pl.DataFrame, **constants: Any) -> pl.DataFrame:
    """Conform a rule's output to :data:`EVALUATION_SCHEMA` (constants fill missing columns)."""
    cols = []
    for name, dtype in EVALUATION_SCHEMA.items():
        if name in frame.columns:
            cols.append(pl.col(name).cast(dtype))
        else:
            default = constants.get(name)
            if default is None and name in ("message", "site_id"):
                default = ""
            cols.append(pl.lit(default, dtype).alias(name))
    return frame.select(cols)


@dataclass(frozen=True, slots=True)
class Transition:
    """One published change of an alert episode (the ``Alert`` Avro record)."""

    alert_id: str
    tenant_id: str
    subject_id: str
    subject_type: str
    rule: str
    severity: Severity
    state: State
    site_id: str
    first_seen: int  # epoch ms UTC, event time of the first firing evaluation
    last_seen: int  # epoch ms UTC, event time of the latest firing evaluation
    count: int  # firing evaluations in this episode so far
    observed: float | None
    threshold: float | None
    message: str
    attributes: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The alerts topic key: tenant, subject and rule, so one episode stays in one partition."""
        return f"{self.tenant_id}|{self.subject_id}|{self.rule}"

    def record(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "tenant_id": self.tenant_id,
            "subject_id": self.subject_id,
            "subject_type": self.subject_type,
            "rule": self.rule,
            "severity": str(self.severity),
            "state": self.state.value,
            "site_id": self.site_id or None,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "count": self.count,
            "observed": self.observed,
            "threshold": self.threshold,
            "message": self.message,
            "attributes": dict(self.attributes),
        }
