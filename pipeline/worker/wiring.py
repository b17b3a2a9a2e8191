"""The ``meter.readings`` processor (and the validator and duplicate filter ``meter.frames`` shares) as the
worker builds them from its settings.

``build_worker`` (Faust, ClickHouse) and ``python -m bench.offline`` (in process) both build
it here, so the offline A/B measures the processor the worker runs.
"""

from __future__ import annotations

from pipeline.catalogue import Catalogue
from pipeline.codecs import Decoder
from pipeline.settings import Settings
from pipeline.tenancy import Registry
from pipeline.validation import DuplicateFilter, ReadingValidator
from pipeline.worker.derive import IntervalDeriver
from pipeline.worker.derive_state import Fetch
from pipeline.worker.fuel import FuelDeriver
from pipeline.worker.processors import Derive, ReadingsProcessor, compose

__all__ = ["duplicate_filter", "meter_derive", "reading_validator", "readings_processor"]


def meter_derive(settings: Settings, catalogue: Catalogue, registry: Registry, stored: Fetch) -> Derive | None:
    """Interval consumption and generator fuel, each if enabled, reading earlier readings through ``stored``."""
    return compose(
        IntervalDeriver(catalogue, registry, stored) if settings.derive_intervals else None,
        FuelDeriver(catalogue, registry, stored) if settings.derive_fuel else None,
    )


def readings_processor(
    settings: Settings, catalogue: Catalogue, registry: Registry, decoder: Decoder, derive: Derive | None
) -> ReadingsProcessor:
    """decode → validate → de-duplicate → tag → ``derive`` (e.g. :func:`meter_derive`, with the anomaly rules)."""
    return ReadingsProcessor(decoder, reading_validator(settings, catalogue), registry, duplicate_filter(settings),
                             derive)  # fmt: skip


def reading_validator(settings: Settings, catalogue: Catalogue) -> ReadingValidator:
    """The readings' lateness and future bounds from ``settings`` (Avro/JSON readings and DLMS frames alike)."""
    bounds = {"lateness_ms": settings.lateness_ms, "future_tolerance_ms": settings.future_tolerance_ms}
    return ReadingValidator(catalogue, **bounds)


def duplicate_filter(settings: Settings) -> DuplicateFilter:
    return DuplicateFilter(settings.duplicate_cache_rows)
