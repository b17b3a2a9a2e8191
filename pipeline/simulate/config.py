"""Simulator settings and the message type it emits.

Everything here is plain data: :class:`SimConfig` says how big and how faulty the
simulated fleet is, :class:`OutMessage` is one Kafka message (topic suffix, key,
value, headers) ready for :func:`pipeline.simulate.produce.produce`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DAY_MS",
    "FRAMES_TOPIC",
    "HOUR_MS",
    "READINGS_TOPIC",
    "REGISTRY_TOPIC",
    "SIM_USAGE_TOPIC",
    "OutMessage",
    "SimConfig",
]

REGISTRY_TOPIC = "registry.devices"
READINGS_TOPIC = "meter.readings"
SIM_USAGE_TOPIC = "sim.usage"
FRAMES_TOPIC = "meter.frames"

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000

_KNOWN_FORMATS = ("avro", "confluent", "json")


@dataclass(frozen=True)
class SimConfig:
    """Size, shape and fault load of a simulated fleet.

    ``fault_rate`` is the share of readings that carry one record-level fault
    (bad channel, bad timestamp, duplicate); message-level and data faults come
    on top in small fixed numbers that grow with the number of sites.
    ``format_weights`` defaults to 80/20 for two formats, equal shares otherwise.
    ``dlms_meters`` smart meters push encrypted DLMS/COSEM frames on ``meter.frames``
    (see :mod:`pipeline.simulate.dlms`; their keys are in ``Scenario.dlms_keys``).
    ``lateness_days`` and ``future_tolerance_s`` mirror the pipeline's validation
    settings: the ground truth counts readings beyond them as rejected.
    """

    seed: int = 7
    tenants: int = 3
    sites_per_tenant: int = 3
    days: float = 2.0
    batch: bool = True
    faults: bool = True
    fault_rate: float = 0.01
    formats: tuple[str, ...] = ("avro", "json")
    format_weights: tuple[float, ...] | None = None
    unknown_devices: int = 2
    dlms_meters: int = 0
    polls_per_batch: int = 3
    lateness_days: float = 30.0
    future_tolerance_s: int = 300

    def __post_init__(self) -> None:
        if self.tenants < 1 or self.sites_per_tenant < 1:
            raise ValueError("tenants and sites_per_tenant must be >= 1")
        if not 0 < self.days <= 400:
            raise ValueError("days must be in (0, 400]")
        if not 0 <= self.fault_rate <= 0.5:
            raise ValueError("fault_rate must be in [0, 0.5]")
        if not self.formats or any(f not in _KNOWN_FORMATS for f in self.formats):
            raise ValueError(f"formats must be a non-empty subset of {_KNOWN_FORMATS}")
        if self.format_weights is not None and len(self.format_weights) != len(self.formats):
            raise ValueError("format_weights needs one weight per format")
        if self.unknown_devices < 0 or self.polls_per_batch < 1:
            raise ValueError("unknown_devices must be >= 0 and polls_per_batch >= 1")
        if self.dlms_meters < 0:
            raise ValueError("dlms_meters must be >= 0")

    def weights(self) -> tuple[float, ...]:
        if self.format_weights is not None:
            return tuple(float(w) for w in self.format_weights)
        if self.formats == ("avro", "json"):
            return (0.8, 0.2)
        return tuple(1.0 for _ in self.formats)

    @property
    def sites(self) -> int:
        return self.tenants * self.sites_per_tenant


@dataclass(frozen=True)
class OutMessage:
    """One message to produce. ``topic`` is the suffix (``meter.readings``), without the prefix."""

    topic: str
    key: bytes
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
