"""Tariffs from the registry (JSON): flat or time-of-use bands, and the cost of intervals.

Shapes accepted (``tariff`` field of a DeviceRegistration, a JSON string or a dict)::

    {"currency": "EUR", "rate": 0.28}                                  # flat, per kWh
    {"currency": "INR", "default_rate": 6.0, "bands": [                # time of use
        {"days": "mon-fri", "from": "09:00", "to": "18:00", "rate": 8.5},
        {"days": "mon-sun", "from": "22:00", "to": "06:00", "rate": 4.8}]}

``days``: ``mon``..``sun``, ranges (``mon-fri``, ``fri-mon`` wraps), lists (``sat,sun`` or a
JSON list), ``weekdays``, ``weekends``, ``all``/``daily``. Times are local ``HH:MM``
(``24:00`` allowed as an end). A band whose ``to`` is before ``from`` crosses midnight and
belongs to the day it starts on (``fri 22:00–06:00`` ends Saturday 06:00). Bands must not
overlap; minutes no band covers take ``default_rate``, which is required if any minute of
the week is uncovered. Rates are per kWh and ≥ 0. Every problem raises :class:`TariffError`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import polars as pl

from pipeline.derive.localtime import local_fields
from pipeline.errors import TelemetryError

__all__ = ["Tariff", "TariffError", "cost_by_device", "cost_of_intervals", "parse_tariff", "tariff_of"]

WEEK_MIN = 7 * 1440
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_ALIASES = {"weekdays": "mon-fri", "weekends": "sat-sun", "weekend": "sat-sun", "all": "mon-sun", "daily": "mon-sun"}
_TIME = re.compile(r"^(\d{1,2}):(\d{2})$")


class TariffError(TelemetryError, ValueError):
    """The tariff document is not a valid flat or time-of-use tariff."""


@dataclass(frozen=True)
class Tariff:
    currency: str
    minute_rates: tuple[float, ...]  # rate per kWh for every local minute of the week, Monday 00:00 first
    flat: bool

    def slot_rates(self, minutes: int) -> list[float]:
        """Mean rate of the ``minutes`` local minutes starting at each minute of the week (wrapping)."""
        r = self.minute_rates
        prefix = [0.0]
        for x in r + r[:minutes]:
            prefix.append(prefix[-1] + x)
        return [(prefix[m + minutes] - prefix[m]) / minutes for m in range(WEEK_MIN)]


def _rate(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise TariffError(f"{where}: rate must be a finite number >= 0, got {value!r}")
    return float(value)


def _minute(text: Any, where: str) -> int:
    m = _TIME.match(text) if isinstance(text, str) else None
    if not m or int(m[2]) > 59 or int(m[1]) * 60 + int(m[2]) > 1440:
        raise TariffError(f"{where}: time must be 'HH:MM' between 00:00 and 24:00, got {text!r}")
    return int(m[1]) * 60 + int(m[2])


def _days(spec: Any, where: str) -> list[int]:
    parts = spec if isinstance(spec, list) else str(spec).lower().replace(" ", "").split(",") if spec else []
    out: list[int] = []
    for part in parts:
        part = _ALIASES.get(str(part).lower(), str(part).lower())
        a, _, b = part.partition("-")
        if a not in _DAYS or (b and b not in _DAYS):
            raise TariffError(f"{where}: days must be mon..sun, ranges like mon-fri or lists, got {spec!r}")
        i, j = _DAYS.index(a), _DAYS.index(b or a)
        out += [(i + k) % 7 for k in range((j - i) % 7 + 1)]
    if not out:
        raise TariffError(f"{where}: no days given")
    return sorted(set(out))


def parse_tariff(doc: str | Mapping[str, Any]) -> Tariff:
    """Validate a tariff document and expand it to a rate per local minute of the week."""
    if isinstance(doc, str):
        try:
            doc = json.loads(doc)
        except json.JSONDecodeError as exc:
            raise TariffError(f"tariff is not valid JSON: {exc}") from None
        return _parse_cached(json.dumps(doc, sort_keys=True))
    return _parse_cached(json.dumps(doc, sort_keys=True))


@lru_cache(maxsize=256)
def _parse_cached(text: str) -> Tariff:
    doc = json.loads(text)
    if not isinstance(doc, dict):
        raise TariffError("tariff must be a JSON object")
    currency = doc.get("currency")
    if not (isinstance(currency, str) and re.fullmatch(r"[A-Z]{3}", currency)):
        raise TariffError(f"tariff currency must be a 3-letter ISO 4217 code, got {currency!r}")
    if "rate" in doc:
        if "bands" in doc:
            raise TariffError("tariff has both 'rate' (flat) and 'bands' (time of use)")
        return Tariff(currency, (_rate(doc["rate"], "flat tariff"),) * WEEK_MIN, True)
    bands = doc.get("bands")
    if not isinstance(bands, list) or not bands:
        raise TariffError("tariff needs 'rate' (flat) or a non-empty list 'bands' (time of use)")
    default = _rate(doc["default_rate"], "default_rate") if doc.get("default_rate") is not None else None
    owner: list[int | None] = [None] * WEEK_MIN
    rates: list[float | None] = [default] * WEEK_MIN
    for n, band in enumerate(bands):
        where = f"band {n + 1}"
        if not isinstance(band, dict):
            raise TariffError(f"{where}: must be an object with days, from, to, rate")
        rate = _rate(band.get("rate"), where)
        start, end = _minute(band.get("from"), where), _minute(band.get("to"), where)
        if start == end or start == 1440:
            raise TariffError(f"{where}: empty time range {band.get('from')}–{band.get('to')}")
        length = (end - start) % 1440 or 1440
        for day in _days(band.get("days"), where):
            for k in range(length):
                m = (day * 1440 + start + k) % WEEK_MIN
                if owner[m] is not None:
                    d, hm = divmod(m, 1440)
                    raise TariffError(
                        f"{where} overlaps band {owner[m] + 1} at {_DAYS[d]} {hm // 60:02d}:{hm % 60:02d}"
                    )
                owner[m], rates[m] = n, rate
    if None in rates:
        d, hm = divmod(rates.index(None), 1440)
        raise TariffError(f"bands leave {_DAYS[d]} {hm // 60:02d}:{hm % 60:02d} uncovered and there is no default_rate")
    return Tariff(currency, tuple(float(r) for r in rates if r is not None), False)


def cost_of_intervals(
    intervals: pl.DataFrame,
    tariff: Tariff | str | Mapping[str, Any],
    timezone: str,
    *,
    interval_s: int = 900,
    wh_per_unit: float = 1000.0,
) -> pl.DataFrame:
    """``intervals`` + ``rate`` (per kWh), ``cost`` and ``currency``.

    ``cost = (measured + estimated) / wh_per_unit × rate`` where ``rate`` is the mean tariff
    rate over the interval's local minutes (an interval that straddles a band edge pays each
    part at its rate, assuming even consumption within the interval). Local time is the
    interval start in ``timezone``; DST changes happen on whole quarter hours, so an
    interval never straddles one.
    """
    t = tariff if isinstance(tariff, Tariff) else parse_tariff(tariff)
    minutes = interval_s // 60
    if t.flat:
        rate = pl.lit(t.minute_rates[0])
        out = intervals.with_columns(rate=rate)
    else:
        table = pl.DataFrame({"_mow": pl.int_range(0, WEEK_MIN, eager=True).cast(pl.Int32),
                              "rate": t.slot_rates(minutes)})  # fmt: skip
        out = (local_fields(intervals, "interval_start_ms", tz_col="", default_tz=timezone, day=None,
                            weekday="_wd", minute_of_day="_mod")
               .with_columns(_mow=(pl.col("_wd").cast(pl.Int32) - 1) * 1440 + pl.col("_mod"))
               .join(table, on="_mow", how="left", maintain_order="left").drop("_wd", "_mod", "_mow"))  # fmt: skip
    energy = pl.col("measured") + pl.col("estimated")
    return out.with_columns(cost=energy / wh_per_unit * pl.col("rate"), currency=pl.lit(t.currency))


def tariff_of(record: Mapping[str, Any]) -> Tariff | None:
    """The tariff a registration record names (``tariff`` JSON), or None; invalid ones raise TariffError."""
    doc = record.get("tariff")
    return parse_tariff(doc) if doc else None


def cost_by_device(
    intervals: pl.DataFrame,
    tariffs: Mapping[str, tuple[str | Mapping[str, Any] | None, str]],
    *,
    key: str = "device_id",
    quantities: tuple[str, ...] = ("active_energy_import",),
    interval_s: int = 900,
) -> pl.DataFrame:
    """``intervals`` + ``rate``, ``cost``, ``currency`` using ``tariffs[device] = (tariff doc, timezone)``.

    Only rows whose ``quantity`` is in ``quantities`` (tariffs price imported energy) and whose
    device has a tariff are priced; the others get nulls. Row order is kept.
    """
    work = intervals.with_row_index("__tariff_row")
    groups: dict[tuple[str, str], list[str]] = {}
    for dev, (doc, tz) in tariffs.items():
        if doc:
            text = doc if isinstance(doc, str) else json.dumps(doc, sort_keys=True)
            groups.setdefault((text, tz or "UTC"), []).append(dev)
    priced, done = [], pl.lit(False)
    for (text, tz), devices in groups.items():
        sel = pl.col(key).is_in(devices) & pl.col("quantity").is_in(list(quantities))
        priced.append(cost_of_intervals(work.filter(sel), text, tz, interval_s=interval_s))
        done = done | sel
    rest = work.filter(~done).with_columns(rate=pl.lit(None, dtype=pl.Float64), cost=pl.lit(None, dtype=pl.Float64),
                                           currency=pl.lit(None, dtype=pl.Utf8))  # fmt: skip
    return pl.concat([*priced, rest]).sort("__tariff_row").drop("__tariff_row")
