"""Connectivity-aware gap attribution (``domain/anomalies.md``): why did a meter go silent?

When a meter's ``gap`` opens and the registry links the meter to a SIM, that SIM's usage
over the gap tells the cause: no sessions and no bytes → ``connectivity`` (SIM offline or
out of credit); sessions or bytes present → ``device`` (the link was up, the meter or
gateway did not send). Without usage records reaching the end of the gap the answer is
``unknown`` (the provider's records may still be on their way: they arrive up to 48 h late).
"""

from __future__ import annotations

from typing import Literal

import polars as pl

__all__ = ["CONNECTIVITY", "DEVICE", "UNKNOWN", "Cause", "attribute_gap"]

Cause = Literal["connectivity", "device", "unknown"]
CONNECTIVITY: Cause = "connectivity"
DEVICE: Cause = "device"
UNKNOWN: Cause = "unknown"

_COUNTERS = ("sessions", "bytes_up", "bytes_down")


def _ms(frame: pl.DataFrame, name: str) -> pl.Expr:
    col = pl.col(name)
    return col.dt.epoch("ms") if isinstance(frame.schema[name], pl.Datetime) else col.cast(pl.Int64)


def attribute_gap(start_ms: int, end_ms: int, usage: pl.DataFrame) -> Cause:
    """Cause of a meter's gap [``start_ms``, ``end_ms``) from its linked SIM's usage records.

    ``usage``: one row per record with ``period_start_ms``, ``period_end_ms`` (epoch ms, or
    ``period_start``/``period_end`` timestamps), ``sessions``, ``bytes_up``, ``bytes_down``.
    A record lying mostly inside the gap (at least half of its period) with sessions or bytes
    makes it ``device`` (the SIM was demonstrably online, even if later records are missing);
    a record that only grazes the gap does not count, since the hour before a SIM drops
    still carries the meter's last uploads. Otherwise, if some record ends at or after the
    gap end, ``connectivity``; else ``unknown``.
    """
    if end_ms <= start_ms:
        raise ValueError(f"empty gap [{start_ms}, {end_ms})")
    if usage.height == 0:
        return UNKNOWN
    names = {n: n if n in usage.columns else n.removesuffix("_ms") for n in ("period_start_ms", "period_end_ms")}
    start, end = _ms(usage, names["period_start_ms"]), _ms(usage, names["period_end_ms"])
    used = pl.any_horizontal([pl.col(c).fill_null(0) > 0 for c in _COUNTERS])
    overlap = pl.min_horizontal(end, pl.lit(end_ms)) - pl.max_horizontal(start, pl.lit(start_ms))
    overlaps = (overlap > 0) & (2 * overlap >= end - start)
    facts = usage.select(
        (overlaps & used).fill_null(False).any().alias("active"),
        (end >= end_ms).fill_null(False).any().alias("covered"),
    ).row(0)
    if facts[0]:
        return DEVICE
    return CONNECTIVITY if facts[1] else UNKNOWN
