"""Rule parameters: the catalogue's defaults, overridden per tenant and per site from a TOML file.

::

    [rules.spike]                    # every tenant
    threshold = 4.0

    [tenants.acme.rules.gap]         # one tenant
    period_factor = 3

    [tenants.acme.sites.plant-1.rules.voltage_out_of_band]   # one site of a tenant
    nominal_v = 240.0

The file is validated when it is loaded (unknown rules, unknown parameters, values of the
wrong type or out of range are a :class:`~pipeline.errors.ConfigError` naming where).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.anomaly.catalogue import COMMON_PARAMS, RULES, Param
from pipeline.errors import ConfigError

__all__ = ["Policy"]

Overrides = Mapping[str, Mapping[str, Param]]  # rule -> param -> value


def _check_rules(where: str, table: Any) -> dict[str, dict[str, Param]]:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table of rules")
    out: dict[str, dict[str, Param]] = {}
    for rule, params in table.items():
        spec = RULES.get(rule)
        if spec is None:
            raise ConfigError(f"{where}: unknown rule {rule!r} (known: {', '.join(sorted(RULES))})")
        if not isinstance(params, dict):
            raise ConfigError(f"{where}.{rule}: expected a table of parameters")
        allowed = {**COMMON_PARAMS, **spec.params}
        checked: dict[str, Param] = {}
        for name, value in params.items():
            if name not in allowed:
                raise ConfigError(f"{where}.{rule}: unknown parameter {name!r} (known: {', '.join(sorted(allowed))})")
            checked[name] = _check_value(f"{where}.{rule}.{name}", allowed[name], value)
        out[rule] = checked
    return out


def _check_value(where: str, default: Param, value: Any) -> Param:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if value < 0 or value != value:
            raise ConfigError(f"{where}: must be a non-negative number, got {value!r}")
        if isinstance(default, int) and not isinstance(default, bool) and value != int(value):
            raise ConfigError(f"{where}: expected a whole number, got {value!r}")
        return type(default)(value)
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


class Policy:
    """Effective parameters of a rule for a (tenant, site); immutable after construction."""

    def __init__(
        self,
        rules: Overrides | None = None,
        tenants: Mapping[str, Overrides] | None = None,
        sites: Mapping[tuple[str, str], Overrides] | None = None,
        *,
        source: str = "<defaults>",
    ) -> None:
        self.source = source
        self._rules = _check_rules("rules", dict(rules or {}))
        self._tenants = {t: _check_rules(f"tenants.{t}.rules", dict(o)) for t, o in (tenants or {}).items()}
        self._sites = {k: _check_rules(f"tenants.{k[0]}.sites.{k[1]}.rules", dict(o)) for k, o in (sites or {}).items()}
        self.params = lru_cache(maxsize=65536)(self._params)
        # the rules some tenant or site overrides
        self._local = {r for o in [*self._tenants.values(), *self._sites.values()] for r in o}

    @classmethod
    def load(cls, path: Path | None) -> Policy:
        """The policy file named in the settings, or the defaults without one."""
        if path is None:
            return cls()
        try:
            doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"alert policy {path}: {exc}") from exc
        unknown = set(doc) - {"rules", "tenants"}
        if unknown:
            raise ConfigError(f"alert policy {path}: unknown top-level keys {sorted(unknown)} (rules, tenants)")
        tenants: dict[str, Overrides] = {}
        sites: dict[tuple[str, str], Overrides] = {}
        for tenant, body in (doc.get("tenants") or {}).items():
            extra = set(body) - {"rules", "sites"} if isinstance(body, dict) else {"<not a table>"}
            if extra:
                raise ConfigError(f"alert policy {path}: tenants.{tenant}: unknown keys {sorted(extra)} (rules, sites)")
            tenants[tenant] = body.get("rules") or {}
            for site, sbody in (body.get("sites") or {}).items():
                if not isinstance(sbody, dict) or set(sbody) - {"rules"}:
                    raise ConfigError(f"alert policy {path}: tenants.{tenant}.sites.{site}: only [rules] is allowed")
                sites[(tenant, site)] = sbody.get("rules") or {}
        try:
            return cls(doc.get("rules") or {}, tenants, sites, source=str(path))
        except ConfigError as exc:
            raise ConfigError(f"alert policy {path}: {exc}") from None

    def _params(self, rule: str, tenant: str = "", site: str = "") -> Mapping[str, Param]:
        spec = RULES[rule]
        out: dict[str, Param] = {**COMMON_PARAMS, **spec.params}
        out.update(self._rules.get(rule, {}))
        out.update(self._tenants.get(tenant, {}).get(rule, {}))
        out.update(self._sites.get((tenant, site), {}).get(rule, {}))
        return out

    def uniform(self, rule: str) -> Mapping[str, Param] | None:
        """The parameters of ``rule`` if no tenant or site overrides them (the same everywhere), else None."""
        return None if rule in self._local else self.params(rule)

    def frame(self, rule: str, subjects: pl.DataFrame, names: list[str]) -> pl.DataFrame:
        """``subjects`` (tenant_id, site_id, ...) with one column per parameter in ``names``."""
        pairs = subjects.select("tenant_id", "site_id").unique()
        rows = [self.params(rule, t, s) for t, s in pairs.iter_rows()]
        params = pl.DataFrame({n: [r[n] for r in rows] for n in names}) if rows else None
        joined = (
            pairs.hstack(params) if params is not None else pairs.with_columns(pl.lit(None).alias(n) for n in names)
        )
        return subjects.join(joined, on=["tenant_id", "site_id"], how="left")

    def __repr__(self) -> str:
        return f"Policy(source={self.source!r}, tenants={len(self._tenants)}, sites={len(self._sites)})"
