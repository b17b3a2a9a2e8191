"""Run schedules of generators: registry ``attributes.run_schedule``, in the site's time zone.

Format: entries separated by ``;``, each ``<days> <HH:MM>-<HH:MM>``; days are ``Mon``…``Sun``
(case-insensitive, 3 letters), ranges ``Mon-Fri`` (may wrap: ``Fri-Mon``), lists
``Mon,Wed,Fri`` or ``daily`` / ``*``. An end at or before the start runs past midnight
(``Sat 22:00-06:00`` = Saturday 22:00 to Sunday 06:00); ``24:00`` is allowed as an end.

    Mon-Fri 08:00-18:00; Sat 09:00-13:00
"""

from __future__ import annotations

import re
from functools import lru_cache

import polars as pl

__all__ = ["WEEK_MINUTES", "in_schedule", "parse_schedule"]

WEEK_MINUTES = 7 * 1440
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_ENTRY = re.compile(r"^\s*(?P<days>\S+)\s+(?P<a>\d{1,2}):(?P<am>\d{2})\s*-\s*(?P<b>\d{1,2}):(?P<bm>\d{2})\s*$")


def _day(name: str) -> int:
    try:
        return _DAYS.index(name.strip().lower()[:3])
    except ValueError:
        raise ValueError(f"unknown day {name!r} (Mon..Sun)") from None


def _days(spec: str) -> list[int]:
    if spec.lower() in ("daily", "*"):
        return list(range(7))
    out: list[int] = []
    for part in spec.split(","):
        if "-" in part:
            lo, hi = (_day(x) for x in part.split("-", 1))
            out.extend((lo + i) % 7 for i in range((hi - lo) % 7 + 1))
        else:
            out.append(_day(part))
    return sorted(set(out))


@lru_cache(maxsize=1024)
def parse_schedule(text: str) -> tuple[tuple[int, int], ...]:
    """Minute-of-week ranges [start, end) (Monday 00:00 = 0) of a schedule; ValueError if malformed."""
    ranges: list[tuple[int, int]] = []
    for entry in filter(str.strip, text.split(";")):
        m = _ENTRY.match(entry)
        if m is None:
            raise ValueError(f"bad schedule entry {entry.strip()!r} (expected e.g. 'Mon-Fri 08:00-18:00')")
        a = int(m["a"]) * 60 + int(m["am"])
        b = int(m["b"]) * 60 + int(m["bm"])
        if a >= 1440 or b > 1440 or int(m["am"]) > 59 or int(m["bm"]) > 59:
            raise ValueError(f"bad time in schedule entry {entry.strip()!r}")
        if b <= a:
            b += 1440
        for d in _days(m["days"]):
            lo, hi = d * 1440 + a, d * 1440 + b
            if hi <= WEEK_MINUTES:
                ranges.append((lo, hi))
            else:
                ranges += [(lo, WEEK_MINUTES), (0, hi - WEEK_MINUTES)]
    if not ranges:
        raise ValueError("empty schedule")
    return tuple(sorted(ranges))


def in_schedule(minute_of_week: pl.Expr, ranges: tuple[tuple[int, int], ...]) -> pl.Expr:
    """Boolean expression: ``minute_of_week`` falls in one of ``ranges``."""
    return pl.any_horizontal([(minute_of_week >= lo) & (minute_of_week < hi) for lo, hi in ranges])
