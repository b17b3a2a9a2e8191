"""The meter rules of ``domain/anomalies.md``, one stateful callable per rule.

Each rule is ``rule(batch: MeterBatch, ctx: Context) -> evaluation frame`` (see
:mod:`pipeline.anomaly.model`), with ``spec = RULES[id]``; condition rules emit a row for
every evaluation (firing or not: the non-firing rows clear alerts; their message is ""),
event rules firing rows only. Subjects are devices (``subject_id`` = device id); one row
per (device, rule, ts).

==========================  ==========================  =======================================
rule                        module                      ``ts_ms`` of an evaluation
==========================  ==========================  =======================================
spike                       :mod:`.spike`               interval start (evaluated 30 min late)
flatline                    :mod:`.registers`           the reading
negative_delta              :mod:`.registers`           the reading after the drop (event)
implausible_jump            :mod:`.registers`           the reading after the jump (event)
gap                         :mod:`.connectivity`        first and last missed reading (firing);
                                                        every reading (non-firing)
clock_invalid               :mod:`.connectivity`        the reading (event)
voltage_out_of_band         :mod:`.power_quality`       end of the 10-min window
frequency_out_of_band       :mod:`.power_quality`       end of the 10-min window
low_power_factor            :mod:`.power_quality`       end of the hour
fuel_drop                   :mod:`.machines`            last reading of the 8
generator_unexpected_run    :mod:`.machines`            the reading
hvac_delta_t                :mod:`.machines`            the reading
hvac_short_cycling          :mod:`.machines`            end of the hour
==========================  ==========================  =======================================

Shared machinery (parameters, registry attributes, per-series state) is in
:mod:`pipeline.anomaly.meter_state`. Per-batch cost and measured detection quality: see the
module docs and ``tests/unit/test_anomaly_meter.py``.
"""

from __future__ import annotations

from pipeline.anomaly.connectivity import ClockInvalid, Gap
from pipeline.anomaly.inputs import MeterRule
from pipeline.anomaly.machines import FuelDrop, GeneratorUnexpectedRun, HvacDeltaT, HvacShortCycling
from pipeline.anomaly.power_quality import FrequencyOutOfBand, LowPowerFactor, VoltageOutOfBand
from pipeline.anomaly.registers import Flatline, ImplausibleJump, NegativeDelta
from pipeline.anomaly.spike import Spike
from pipeline.catalogue import Catalogue, load_catalogue

__all__ = ["METER_RULE_IDS", "meter_rules"]

METER_RULE_IDS = (
    "spike",
    "flatline",
    "gap",
    "negative_delta",
    "implausible_jump",
    "voltage_out_of_band",
    "frequency_out_of_band",
    "low_power_factor",
    "clock_invalid",
    "fuel_drop",
    "generator_unexpected_run",
    "hvac_delta_t",
    "hvac_short_cycling",
)


def meter_rules(catalogue: Catalogue | None = None) -> list[MeterRule]:
    """A fresh instance of every meter rule (each keeps its own per-series state)."""
    cat = catalogue or load_catalogue()
    rules: list[MeterRule] = [
        Spike(),
        Flatline(cat),
        Gap(),
        NegativeDelta(),
        ImplausibleJump(),
        VoltageOutOfBand(),
        FrequencyOutOfBand(),
        LowPowerFactor(),
        ClockInvalid(),
        FuelDrop(),
        GeneratorUnexpectedRun(),
        HvacDeltaT(),
        HvacShortCycling(),
    ]
    assert tuple(r.spec.id for r in rules) == METER_RULE_IDS
    return rules
