"""Per-site time axis: 5-minute ticks over the history with local-time shapes precomputed.

Load shapes, daylight and the grid frequency depend only on the site, so they are
computed once per site and shared by its devices.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

__all__ = ["TICK_MS", "Series", "Timeline", "bump", "make_timeline"]

TICK_MS = 300_000


def bump(h: float, centre: float, width: float) -> float:
    """Gaussian bump on the 24-hour circle."""
    d = min(abs(h - centre), 24 - abs(h - centre))
    return math.exp(-0.5 * (d / width) ** 2)


def _ramp(h: float, up: float, down: float) -> float:
    """0 before ``up``, 1 between ``up + 1`` and ``down``, 0 after ``down + 1``; linear in between."""
    return max(0.0, min(1.0, h - up, down + 1 - h))


@dataclass
class Series:
    """One device's readings: times, a measurement dict per time, realised faults and events."""

    ts: list[int]
    values: list[dict[str, float]]
    records: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Timeline:
    ticks: tuple[int, ...]  # epoch ms, every 5 minutes
    hour: tuple[float, ...]  # local fractional hour
    weekend: tuple[bool, ...]
    commercial: tuple[float, ...]  # occupancy shape of an office/shop, 0..1
    residential: tuple[float, ...]  # household shape, ~0.2..1
    sun: tuple[float, ...]  # PV output per kWp, 0..~0.9, with clouds
    frequency: tuple[float, ...]  # grid frequency, Hz

    def index(self, ts: int) -> int:
        return (ts - self.ticks[0]) // TICK_MS


def make_timeline(rng: random.Random, start_ms: int, now_ms: int, timezone: str, latitude: float) -> Timeline:
    first = -(-start_ms // TICK_MS) * TICK_MS
    ticks = tuple(range(first, now_ms - now_ms % TICK_MS + 1, TICK_MS))
    tz = ZoneInfo(timezone)
    hours, weekend, comm, res, sun, freq = [], [], [], [], [], []
    cloud, f = rng.uniform(0.6, 1.0), 0.0
    for t in ticks:
        local = datetime.fromtimestamp(t / 1000, UTC).astimezone(tz)
        h = local.hour + local.minute / 60
        we = local.weekday() >= 5
        hours.append(h)
        weekend.append(we)
        occ = _ramp(h, 7.5, 18.5)
        comm.append(occ * (0.2 if we else 1.0))
        res.append(0.18 + 0.45 * bump(h, 7.5, 1.2) + 0.9 * bump(h, 19.8, 1.8) + (0.15 if we else 0.0) * occ)
        doy = local.timetuple().tm_yday
        season = math.cos(2 * math.pi * (doy - 172) / 365)  # +1 midsummer, -1 midwinter (north)
        half = 6.0 + 3.2 * season * min(abs(latitude), 60) / 55
        elevation = 1 - 0.55 * (1 - season) / 2 * min(abs(latitude), 60) / 45
        cloud = min(1.0, max(0.15, cloud + rng.gauss(0, 0.04)))
        x = (h - (12.5 - half)) / (2 * half)
        sun.append(max(0.0, math.sin(math.pi * x)) * elevation * 0.85 * cloud if 0 < x < 1 else 0.0)
        f = 0.92 * f + rng.gauss(0, 0.006)
        freq.append(round(50.0 + f, 3))
    return Timeline(ticks, tuple(hours), tuple(weekend), tuple(comm), tuple(res), tuple(sun), tuple(freq))
