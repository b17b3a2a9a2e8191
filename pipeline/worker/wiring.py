"""The ``meter.readings`` processor as the worker builds it from its settings.

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

__all__ = ["meter_derive", "readings_processor"]


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
    validator = ReadingValidator(catalogue, lateness_ms=settings.lateness_ms,
                                 future_tolerance_ms=settings.future_tolerance_ms)  # fmt: skip
    return ReadingsProcessor(decoder, validator, registry, DuplicateFilter(settings.duplicate_cache_rows), derive)
