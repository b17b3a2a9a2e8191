"""Anomaly rules (SPEC §5, domain/anomalies.md): evaluation in the stream, alert lifecycle, policy."""

from pipeline.anomaly.attribution import attribute_gap
from pipeline.anomaly.catalogue import COMMON_PARAMS, RULES, RuleSpec
from pipeline.anomaly.inputs import Context, MeterBatch, MeterRule, SimBatch, SimRule
from pipeline.anomaly.meter_rules import meter_rules
from pipeline.anomaly.model import EVALUATION_SCHEMA, Severity, State, Transition, empty_evaluations, evaluations
from pipeline.anomaly.numbering import Numbering
from pipeline.anomaly.policy import Policy
from pipeline.anomaly.sim_rules import sim_rules

__all__ = [
    "COMMON_PARAMS",
    "EVALUATION_SCHEMA",
    "RULES",
    "Context",
    "MeterBatch",
    "MeterRule",
    "Numbering",
    "Policy",
    "RuleSpec",
    "Severity",
    "SimBatch",
    "SimRule",
    "State",
    "Transition",
    "attribute_gap",
    "empty_evaluations",
    "evaluations",
    "meter_rules",
    "sim_rules",
]
