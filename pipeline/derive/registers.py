"""Per-series parameters of the interval rules, from the registry and the quantity catalogue.

:func:`register_params` turns a :class:`~pipeline.tenancy.registry.Registration`
and a catalogue quantity into the keyword arguments of
:func:`pipeline.derive.intervals.compute_intervals`; :func:`params_frame` and
:func:`replacements_frame` build the per-series frames of
:func:`pipeline.derive.intervals.compute_intervals_many`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from pipeline.catalogue import Catalogue
from pipeline.tenancy.registry import Registration

__all__ = [
    "DEFAULT_EXPECTED_PERIOD_S",
    "RegisterParams",
    "Replacement",
    "params_frame",
    "register_params",
    "replacements_frame",
]

DEFAULT_EXPECTED_PERIOD_S = 900  # anomalies.md: "period from registry (default 15 min)"
_ENERGY_UNITS = {"Wh", "varh", "VAh"}
_TIME_UNITS = {"s": 1.0, "h": 1.0 / 3600.0}


@dataclass(frozen=True, slots=True)
class Replacement:
    """A "meter replaced" registry event for one quantity: register of the old meter at removal,
    of the new meter at installation, and the time of the swap (epoch ms UTC).

    Readings with ``ts < at_ms`` belong to the old meter, ``ts >= at_ms`` to the new one.
    """

    at_ms: int
    old_final: float
    new_first: float


@dataclass(frozen=True, slots=True)
class RegisterParams:
    """What the interval rules need to know about one device + cumulative quantity.

    ``max_rate_per_s``: the largest plausible register increase per second (rated power in
    W / 3600 for Wh registers; 1.0 for runtime registers in seconds; a maximum flow for
    water/gas if the registry gives one); ``None`` = no implausible-jump cap.
    """

    ceiling: float | None
    max_rate_per_s: float | None = None
    expected_period_s: float | None = DEFAULT_EXPECTED_PERIOD_S
    replacements: tuple[Replacement, ...] = field(default_factory=tuple)

    def kwargs(self) -> dict[str, Any]:
        return {"ceiling": self.ceiling, "max_rate_per_s": self.max_rate_per_s,
                "expected_period_s": self.expected_period_s, "replacements": self.replacements}  # fmt: skip


def _max_flow_per_s(record: Mapping[str, Any]) -> float | None:
    """Optional maximum flow (register units per hour) from the registration or its attributes."""
    raw = record.get("max_flow_per_h")
    if raw is None:
        raw = (record.get("attributes") or {}).get("max_flow_per_h")
    try:
        return float(raw) / 3600.0 if raw is not None else None
    except (TypeError, ValueError):
        return None


def _replacements(record: Mapping[str, Any], code: str) -> tuple[Replacement, ...]:
    rep = record.get("replaced")
    if not rep:
        return ()
    items = rep if isinstance(rep, list) else [rep]
    out = []
    for r in items:
        old, new = (r.get("old_final") or {}), (r.get("new_first") or {})
        if code in old and code in new and r.get("at") is not None:
            out.append(Replacement(int(r["at"]), float(old[code]), float(new[code])))
    return tuple(sorted(out, key=lambda x: x.at_ms))


def register_params(code: str, registration: Registration | None, catalogue: Catalogue) -> RegisterParams:
    """Parameters of the interval rules for quantity ``code`` of a registered device.

    Ceiling: registry ``register_ceilings[code]``, else the catalogue's. Cap: rated power
    for energy registers (Wh, varh), elapsed time itself for runtime registers, a
    registered maximum flow for volumes, else none. Expected period: registry, else 900 s.
    """
    q = catalogue[code]
    reg = registration
    ceiling = (reg.register_ceilings.get(code) if reg else None) or q.ceiling
    rate: float | None = None
    if q.unit in _ENERGY_UNITS and reg is not None and reg.rated_power_w:
        rate = float(reg.rated_power_w) / 3600.0
    elif q.unit in _TIME_UNITS:
        rate = _TIME_UNITS[q.unit]
    elif reg is not None:
        rate = _max_flow_per_s(reg.record)
    period = float(reg.expected_period_s) if reg is not None and reg.expected_period_s else DEFAULT_EXPECTED_PERIOD_S
    return RegisterParams(
        ceiling=float(ceiling) if ceiling is not None else None,
        max_rate_per_s=rate,
        expected_period_s=period,
        replacements=_replacements(reg.record, code) if reg else (),
    )


def params_frame(params: Mapping[tuple[str, ...], RegisterParams], keys: Iterable[str]) -> pl.DataFrame:
    """One row per series key: ``*keys, ceiling, max_rate_per_s, expected_period_s`` (Float64, nullable)."""
    keys = list(keys)
    rows = [(*k, p.ceiling, p.max_rate_per_s, p.expected_period_s) for k, p in params.items()]
    schema = {**{k: pl.Utf8 for k in keys}, "ceiling": pl.Float64, "max_rate_per_s": pl.Float64,
              "expected_period_s": pl.Float64}  # fmt: skip
    return pl.DataFrame(rows, schema=schema, orient="row")


def replacements_frame(params: Mapping[tuple[str, ...], RegisterParams], keys: Iterable[str]) -> pl.DataFrame:
    """One row per replacement: ``*keys, at_ms (Int64), old_final, new_first (Float64)``."""
    keys = list(keys)
    rows = [(*k, r.at_ms, r.old_final, r.new_first) for k, p in params.items() for r in p.replacements]
    schema = {**{k: pl.Utf8 for k in keys}, "at_ms": pl.Int64, "old_final": pl.Float64, "new_first": pl.Float64}
    return pl.DataFrame(rows, schema=schema, orient="row")
