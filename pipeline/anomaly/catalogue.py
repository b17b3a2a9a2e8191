"""The rule set of ``domain/anomalies.md``: ids, kinds, default severities and parameters.

This is data, not behaviour: the evaluators in :mod:`pipeline.anomaly.meter_rules` and
:mod:`pipeline.anomaly.sim_rules` read their parameters through a
:class:`~pipeline.anomaly.policy.Policy`, which validates overrides against these specs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from pipeline.anomaly.model import Severity

__all__ = ["COMMON_PARAMS", "RULES", "RuleSpec"]

Param = float | int | bool | str


@dataclass(frozen=True, slots=True)
class RuleSpec:
    id: str
    subject_type: str  # device | sim
    kind: str  # condition (clear after clear_after false evaluations) | event (clear after quiet_period_s)
    severity: Severity
    params: Mapping[str, Param] = field(default_factory=dict)
    doc: str = ""


def _p(**kw: Param) -> Mapping[str, Param]:
    return MappingProxyType(kw)


W, C = Severity.WARNING, Severity.CRITICAL

# Parameters every rule has (overridable per tenant/site like the others).
COMMON_PARAMS: Mapping[str, Param] = _p(enabled=True, clear_after=3, quiet_period_s=3600)

_SPECS = (
    RuleSpec("spike", "device", "condition", W,
             _p(window_days=7.0, threshold=3.5, min_history=96, tod_window_minutes=30, mad_floor=0.3,
                level_floor=0.1, local_floor=0.3, noise_threshold=8.0),
             "robust z-score of an interval's consumption against the device's recent intervals at the same "
             "time of day, and against its neighbouring intervals (see pipeline.anomaly.spike)"),
    RuleSpec("flatline", "device", "condition", W, _p(samples=12, epsilon=1e-6, power_threshold_w=50.0),
             "register unchanged while power > threshold, or a signal's range <= epsilon over N samples"),
    RuleSpec("gap", "device", "condition", W, _p(period_factor=2.0, default_period_s=900),
             "no reading for more than period_factor x the expected period"),
    RuleSpec("negative_delta", "device", "event", W, _p(), "register went backwards and was not a rollover"),
    RuleSpec("implausible_jump", "device", "event", W, _p(), "delta above rated power x elapsed time"),
    RuleSpec("voltage_out_of_band", "device", "condition", W,
             _p(window_minutes=10, nominal_v=230.0, warning_low=0.10, warning_high=0.10, critical_low=0.15,
                critical_high=0.10),
             "10-min mean voltage outside +-10% of nominal; critical outside -15%/+10%"),
    RuleSpec("frequency_out_of_band", "device", "condition", W,
             _p(window_minutes=10, warning_low_hz=49.5, warning_high_hz=50.5, critical_low_hz=47.0,
                critical_high_hz=52.0),
             "mean frequency outside 49.5-50.5 Hz; critical outside 47-52 Hz"),
    RuleSpec("low_power_factor", "device", "condition", W, _p(threshold=0.9), "hourly mean power factor < 0.9"),
    RuleSpec("clock_invalid", "device", "event", W, _p(future_tolerance_s=300),
             "DLMS clock status invalid/doubtful, or a timestamp more than 5 min in the future"),
    RuleSpec("fuel_drop", "device", "condition", C, _p(samples=8, threshold_l=3.0, threshold_tank_ratio=0.02),
             "generator stopped and the fuel level falls: mean of first 4 of 8 samples minus mean of last 4"),
    RuleSpec("generator_unexpected_run", "device", "condition", W, _p(),
             "runtime register advancing outside the site's schedule (registry attribute run_schedule)"),
    RuleSpec("hvac_delta_t", "device", "condition", W, _p(samples=5, min_delta_c=5.0, max_delta_c=15.0),
             "return - supply air outside 5-15 C for 5 consecutive samples while the compressor runs"),
    RuleSpec("hvac_short_cycling", "device", "condition", W, _p(max_starts_per_hour=6, min_run_minutes=10.0),
             "compressor starts per hour > 6 (or run periods < 10 min)"),
    RuleSpec("sim_data_spike", "sim", "condition", W,
             _p(window_days=28, threshold=3.5, floor_bytes=1_000_000, min_history_days=3),
             "daily bytes: robust z-score against the SIM's last 28 days, above an absolute floor"),
    RuleSpec("sim_over_plan", "sim", "condition", W, _p(warning_ratio=0.8, critical_ratio=1.0),
             "cycle-to-date bytes >= plan allowance x ratio"),
    RuleSpec("sim_roaming", "sim", "condition", W, _p(), "serving MCC differs from the IMSI's while stationary"),
    RuleSpec("sim_imei_change", "sim", "event", C, _p(), "IMEI differs from the last one seen for the ICCID"),
    RuleSpec("sim_dormant_wake", "sim", "event", W, _p(dormant_days=30), "first session after >= N silent days"),
    RuleSpec("sim_sms_flood", "sim", "condition", W, _p(threshold=100), "SMS MO in 24 h above threshold"),
)  # fmt: skip

RULES: Mapping[str, RuleSpec] = MappingProxyType({s.id: s for s in _SPECS})
