"""Anomaly rules (SPEC §5, domain/anomalies.md): evaluation in the stream, alert lifecycle, policy."""

from pipeline.anomaly.catalogue import COMMON_PARAMS, RULES, RuleSpec
from pipeline.anomaly.inputs import Context, MeterBatch, MeterRule, SimBatch, SimRule
from pipeline.anomaly.model import EVALUATION_SCHEMA, Severity, State, Transition, empty_evaluations, evaluations
from pipeline.anomaly.policy import Policy

__all__ = [
    "COMMON_PARAMS",
    "EVALUATION_SCHEMA",
    "RULES",
    "Context",
    "MeterBatch",
    "MeterRule",
    "Policy",
    "RuleSpec",
    "Severity",
    "SimBatch",
    "SimRule",
    "State",
    "Transition",
    "empty_evaluations",
    "evaluations",
]
