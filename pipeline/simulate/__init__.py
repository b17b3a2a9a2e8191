"""A seeded, realistic telemetry fleet with fault injection and exact ground truth.

``build_scenario(SimConfig(...), now_ms, Encoder(SchemaStore.load()))`` returns the
registrations, the telemetry messages in send order and a :class:`GroundTruth`
(expected rows per tenant, dead letters per reason, the injected faults);
:func:`produce` sends messages to Kafka. Same seed and ``now_ms`` → identical bytes.
"""

from pipeline.simulate.config import (
    FRAMES_TOPIC,
    READINGS_TOPIC,
    REGISTRY_TOPIC,
    SIM_USAGE_TOPIC,
    OutMessage,
    SimConfig,
)
from pipeline.simulate.produce import produce
from pipeline.simulate.scenario import Scenario, build_scenario
from pipeline.simulate.truth import GroundTruth

__all__ = [
    "FRAMES_TOPIC",
    "READINGS_TOPIC",
    "REGISTRY_TOPIC",
    "SIM_USAGE_TOPIC",
    "GroundTruth",
    "OutMessage",
    "Scenario",
    "SimConfig",
    "build_scenario",
    "produce",
]
