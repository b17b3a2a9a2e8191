"""Ground truth of interval consumption: how far each register really advanced per UTC day.

For every registered device and cumulative quantity (energy import/export, water, gas,
generator and HVAC runtime) the simulator knows the register at every sample, including
the samples an injected gap never sent, and where it wrapped or was reset. The advance
of a day is the sum over consecutive samples (t0, t1) with t0 in that UTC day of the
register's increase: across a rollover the wrap is undone with the ceiling; across a
reset the register restarted from 0, so the step advanced by its new value, which the
interval rules by design do not count (meters.md rule 3): that part is ``uncounted``.
Samples are aligned to the reading period, so no pair crosses midnight. A register sample
the pipeline refuses at either end of the series (the last poll out of range, say) has no
accepted neighbour beyond it, so the steps out to it are never measured: they are left out.

A day's measured consumption must equal ``advance - uncounted`` unless

* ``gap``: an injected gap (device silent or site offline) touches the day or its closing
  midnight sample: the pipeline estimates the gap linearly, never as measured;
* ``split``: the register channel of the sample at one of the day's two midnights was
  rejected (corrupted channel), so the pair around it crosses midnight and is shared
  pro rata by time between the two days.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from pipeline.simulate.config import DAY_MS

__all__ = ["RegisterSeries", "daily_advance"]


@dataclass(frozen=True, slots=True)
class RegisterSeries:
    """One register of one device as simulated (every sample, sent or not)."""

    device_id: str
    tenant_id: str
    quantity: str
    ts: tuple[int, ...]
    values: tuple[float, ...]  # as the meter shows them: rounded, wrapped, reset
    sent: tuple[bool, ...]  # False: the sample falls inside an injected gap
    fault: str | None = None  # "rollover" | "reset" at ``fault_ts``
    fault_ts: int | None = None
    ceiling: float | None = None


def _unwrapped(s: RegisterSeries) -> list[float]:
    """The register with the injected wrap or reset undone (a reset restarts from 0)."""
    if s.fault not in ("rollover", "reset") or s.fault_ts is None or s.fault_ts not in s.ts:
        return list(s.values)
    k = s.ts.index(s.fault_ts)
    if s.fault == "rollover":
        offset = s.ceiling or 0.0
    else:
        offset = s.values[k - 1] if k else 0.0
    return [v + offset if i >= k else v for i, v in enumerate(s.values)]


def _day(ts: int) -> str:
    return datetime.fromtimestamp(ts / 1000, UTC).date().isoformat()


def daily_advance(series: Iterable[RegisterSeries], rejected: set[tuple[str, str, int]]) -> list[dict[str, object]]:
    """Rows ``device_id, tenant_id, quantity, day, advance, uncounted, gap, split``, sorted.

    ``rejected``: (device, quantity, ts) of register channels the pipeline refuses.
    """
    refused_at: dict[tuple[str, str], set[int]] = defaultdict(set)
    for dev, q, t in rejected:
        refused_at[(dev, q)].add(t)
    rows: list[dict[str, object]] = []
    for s in series:
        if len(s.ts) < 2:
            continue
        u = _unwrapped(s)
        parts: dict[int, list[float]] = defaultdict(list)
        uncounted: dict[int, float] = defaultdict(float)
        refused = refused_at.get((s.device_id, s.quantity), set())
        kept = [j for j, t in enumerate(s.ts) if t not in refused]
        if len(kept) < 2:
            continue
        for j in range(kept[0] + 1, kept[-1] + 1):
            d0 = s.ts[j - 1] // DAY_MS
            parts[d0].append(u[j] - u[j - 1])
            if s.fault == "reset" and s.ts[j] == s.fault_ts:
                uncounted[d0] += s.values[j]
        silent = {t for t, ok in zip(s.ts, s.sent, strict=True) if not ok}
        for d0, p in sorted(parts.items()):
            lo, hi = d0 * DAY_MS, (d0 + 1) * DAY_MS
            rows.append({
                "device_id": s.device_id, "tenant_id": s.tenant_id, "quantity": s.quantity, "day": _day(lo),
                "advance": math.fsum(p), "uncounted": uncounted.get(d0, 0.0),
                "gap": any(lo <= t <= hi for t in silent), "split": lo in refused or hi in refused,
            })  # fmt: skip
    return sorted(rows, key=lambda r: (str(r["device_id"]), str(r["quantity"]), str(r["day"])))
