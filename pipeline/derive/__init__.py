"""Derive (SPEC §5): interval consumption, generator fuel, rollups, tariff cost and SIM usage rollups.

Every function here is pure: its result depends only on the *set* of records it is given
(plus registry parameters), never on arrival order, so the stream can recompute whatever
a batch touches and overwrite it. See :mod:`pipeline.derive.windowing` for the recipe and
``sql/007``–``009`` for the tables and analyst views.
"""

from pipeline.derive.fuel import FUEL_SCHEMA, FuelResult, fuel_intervals, generator_intervals
from pipeline.derive.intervals import (
    EVENT_SCHEMA,
    INTERVAL_SCHEMA,
    IntervalResult,
    IntervalRules,
    compute_intervals,
    compute_intervals_many,
    readings_frame,
)
from pipeline.derive.localtime import local_fields
from pipeline.derive.registers import (
    RegisterParams,
    Replacement,
    params_frame,
    register_params,
    replacements_frame,
)
from pipeline.derive.rollups import (
    attach_registry,
    consumption_rollup,
    instantaneous_codes,
    instantaneous_intervals,
    instantaneous_rollup,
)
from pipeline.derive.sim import SIM_COUNTERS, billing_cycle, sim_cycles, sim_daily, tenant_sim_daily
from pipeline.derive.tariffs import Tariff, TariffError, cost_by_device, cost_of_intervals, parse_tariff, tariff_of
from pipeline.derive.windowing import affected_range, affected_ranges, window, window_many

__all__ = [
    "EVENT_SCHEMA",
    "FUEL_SCHEMA",
    "INTERVAL_SCHEMA",
    "SIM_COUNTERS",
    "FuelResult",
    "IntervalResult",
    "IntervalRules",
    "RegisterParams",
    "Replacement",
    "Tariff",
    "TariffError",
    "affected_range",
    "affected_ranges",
    "attach_registry",
    "billing_cycle",
    "compute_intervals",
    "compute_intervals_many",
    "consumption_rollup",
    "cost_by_device",
    "cost_of_intervals",
    "fuel_intervals",
    "generator_intervals",
    "instantaneous_codes",
    "instantaneous_intervals",
    "instantaneous_rollup",
    "local_fields",
    "params_frame",
    "parse_tariff",
    "readings_frame",
    "register_params",
    "replacements_frame",
    "sim_cycles",
    "sim_daily",
    "tariff_of",
    "tenant_sim_daily",
    "window",
    "window_many",
]
