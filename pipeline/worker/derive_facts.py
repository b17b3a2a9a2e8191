"""What the interval derivation needs from the registry, kept as frames and refreshed per change.

Per series (``sid``) the rule parameters (:func:`pipeline.derive.register_params`: ceiling,
cap, expected period, replacements); per device the columns of the output rows (site, time
zone, role) and its tariff. They are computed for devices seen for the first time and again
for those the registry reports changed (:meth:`~pipeline.tenancy.Registry.changed_since`), so a
batch of known devices costs one membership test plus frame joins (lazy: the deriver collects
them together with its own).
"""

from __future__ import annotations

from typing import Any

import polars as pl

from pipeline.catalogue import Catalogue
from pipeline.derive import register_params
from pipeline.tenancy import Registry
from pipeline.tenancy.registry import Registration

PARAMS = {"sid": pl.Int64, "device_id": pl.Utf8, "ceiling": pl.Float64, "max_rate_per_s": pl.Float64,
          "expected_period_s": pl.Float64}  # fmt: skip
REPLACEMENTS = {"sid": pl.Int64, "device_id": pl.Utf8, "at_ms": pl.Int64, "old_final": pl.Float64,
                "new_first": pl.Float64}  # fmt: skip
DEVICES = {"device_id": pl.Utf8, "site_id": pl.Utf8, "timezone": pl.Utf8, "role": pl.Utf8}


class DeriveFacts:
    def __init__(self, catalogue: Catalogue, registry: Registry) -> None:
        self._catalogue = catalogue
        self._registry = registry
        self._seen: dict[str, Registration | None] = {}  # device → the registration the frames hold
        self._known = pl.Series("device_id", [], dtype=pl.Utf8)  # the keys of _seen, for batch lookups
        self._version = 0  # registry changes caught up with
        self._params = pl.DataFrame(schema=PARAMS)
        self._replacements = pl.DataFrame(schema=REPLACEMENTS)
        self._devices = pl.DataFrame(schema=DEVICES)
        self._tariffs: dict[str, tuple[Any, str]] = {}  # devices with a tariff: (tariff, time zone)
        self._zones: set[str] = set()

    def refresh(self, devices: pl.Series) -> None:
        """Catch up with the registry's changes and look up the devices not seen before.

        The only per-device Python work is for new or changed devices: a batch of known ones
        costs one vectorised membership test.
        """
        version = self._registry.version
        updated = self._registry.changed_since(self._version)
        if updated is None:  # fell behind the registry's change log: look every device up again
            self._version, changed = version, list(self._seen)
        else:
            self._version += len(updated)
            changed = [d for d in dict.fromkeys(updated) if d in self._seen]
        new = devices.to_frame("device_id").join(self._known.to_frame(), on="device_id", how="anti")
        unseen = new.get_column("device_id").unique().to_list()
        if unseen:
            self._known = pl.concat([self._known, pl.Series("device_id", unseen, dtype=pl.Utf8)])
        changed += unseen
        if not changed:
            return
        get, rows = self._registry.get, []
        for device in changed:
            reg = self._seen[device] = get(device)
            self._tariffs.pop(device, None)
            if reg is None:
                continue
            if reg.record.get("tariff"):
                self._tariffs[device] = (reg.record["tariff"], reg.timezone or "UTC")
            role = str((reg.record.get("attributes") or {}).get("role", ""))
            rows.append((device, reg.site_id, reg.timezone or "UTC", role))
            self._zones.add(reg.timezone or "UTC")
        stale = pl.col("device_id").is_in(changed)
        self._params = self._params.filter(~stale)  # recomputed when their series next come
        self._replacements = self._replacements.filter(~stale)
        fresh = pl.DataFrame(rows, schema=DEVICES, orient="row")
        self._devices = pl.concat([self._devices.filter(~stale), fresh])

    def missing(self, series: pl.LazyFrame) -> pl.LazyFrame:
        """Those of ``series`` (``sid``, ``device_id``, ``quantity``) without parameters yet."""
        return series.join(self._params.lazy(), on="sid", how="anti")

    def add(self, missing: pl.DataFrame) -> None:
        """Compute the parameters of ``missing`` series (after :meth:`refresh` of their devices)."""
        params, replacements = [], []
        for sid, device, code in missing.select("sid", "device_id", "quantity").iter_rows():
            p = register_params(code, self._seen.get(device), self._catalogue)
            params.append((sid, device, p.ceiling, p.max_rate_per_s, p.expected_period_s))
            replacements += [(sid, device, r.at_ms, r.old_final, r.new_first) for r in p.replacements]
        self._params = pl.concat([self._params, pl.DataFrame(params, schema=PARAMS, orient="row")])
        new_repl = pl.DataFrame(replacements, schema=REPLACEMENTS, orient="row")
        self._replacements = pl.concat([self._replacements, new_repl])

    def params(self, series: pl.LazyFrame) -> tuple[pl.LazyFrame, pl.LazyFrame]:
        """(parameters, replacements) of ``series`` (``sid``), keyed by ``sid``."""
        sids = series.select("sid")
        return (self._params.lazy().join(sids, on="sid").drop("device_id"),
                self._replacements.lazy().join(sids, on="sid").drop("device_id"))  # fmt: skip

    def devices(self) -> pl.LazyFrame:
        """``device_id``, ``site_id``, ``timezone``, ``role`` of every device looked up so far."""
        return self._devices.lazy()

    @property
    def zones(self) -> set[str]:
        """Time zones of the devices looked up so far."""
        return self._zones

    def tariffs(self, devices: pl.Series) -> dict[str, tuple[Any, str]]:
        """(tariff, time zone) of those of ``devices`` that have a tariff."""
        if not self._tariffs:
            return {}
        priced = devices.filter(devices.is_in(list(self._tariffs))).unique().to_list()
        return {d: self._tariffs[d] for d in priced}
