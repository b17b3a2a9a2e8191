"""Attach tenant, site and branch to a columnar batch; split off unknown subjects."""

from __future__ import annotations

import polars as pl

from pipeline.envelope import Reason
from pipeline.tenancy.registry import Registry


def tag_frame(
    frame: pl.DataFrame, registry: Registry, *, key: str = "device_id", kind: str = "device"
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return (tagged rows with tenant_id/site_id/branch, rows of unregistered subjects).

    Only registrations of ``kind`` ("device" or "sim") match; the rejected frame
    carries ``reason`` = unknown_device and a ``detail``.
    """
    ids = frame.get_column(key).unique().to_list() if frame.height else []
    found = {sid: r for sid, r in registry.lookup_many(ids).items() if r.subject_type == kind}
    lookup = pl.DataFrame(
        {
            key: list(found),
            "tenant_id": [r.tenant_id for r in found.values()],
            "site_id": [r.site_id for r in found.values()],
            "branch": [r.branch for r in found.values()],
        },
        schema={key: pl.Utf8, "tenant_id": pl.Utf8, "site_id": pl.Utf8, "branch": pl.Utf8},
    )
    tagged = frame.join(lookup, on=key, how="inner", maintain_order="left")
    unknown = frame.join(lookup, on=key, how="anti", maintain_order="left").with_columns(
        pl.lit(Reason.UNKNOWN_DEVICE.value).alias("reason"),
        (pl.lit(f"{kind} ") + pl.col(key) + pl.lit(" is not registered")).alias("detail"),
    )
    return tagged, unknown
