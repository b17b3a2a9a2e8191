"""Turn rejected rows of a columnar batch into :class:`Rejected` dead-letter records.

One dead-letter record per (message, reading in message, reason). For a
single-reading message the original bytes go to the dead-letter topic; for one
reading of a gateway batch, that reading alone (only its rejected channels) is
re-encoded as JSON so that replaying it re-processes exactly what was refused.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import polars as pl

from pipeline.envelope import RawMessage, Reason, Rejected

_MAX_DETAILS = 5


def _json_value(v: float | None) -> float | str | None:
    if v is None:
        return None
    return v if math.isfinite(v) else repr(v)  # keep NaN/inf visible without invalid JSON


def rows_to_rejects(
    rows: pl.DataFrame, messages: Sequence[RawMessage], *, reading_payload: bool = True
) -> list[Rejected]:
    """Group rejected rows (columns msg_idx, rec_idx, reason, detail, ...) into dead-letter records."""
    if rows.height == 0:
        return []
    has_tenant = "tenant_id" in rows.columns
    out: list[Rejected] = []
    for (msg_idx, rec_idx, reason), group in rows.group_by(["msg_idx", "rec_idx", "reason"], maintain_order=True):
        details = list(dict.fromkeys(group.get_column("detail").to_list()))  # unique, in order
        detail = "; ".join(details[:_MAX_DETAILS]) + (
            f" (+{len(details) - _MAX_DETAILS} more)" if len(details) > _MAX_DETAILS else ""
        )
        payload = None
        if reading_payload and rec_idx >= 0 and "quantity" in group.columns:
            first = group.row(0, named=True)
            payload = json.dumps(
                {
                    "device_id": first["device_id"],
                    "ts": first["ts_ms"],
                    "measurements": dict(
                        zip(
                            group.get_column("quantity").to_list(),
                            map(_json_value, group.get_column("value").to_list()),
                            strict=True,
                        )
                    ),
                    "seq": first.get("seq"),
                    "event_id": first.get("event_id"),
                    "quality": first.get("quality"),
                },
                separators=(",", ":"),
            ).encode()
        tenant = (group.get_column("tenant_id")[0] or "") if has_tenant else ""
        out.append(
            Rejected(
                Reason(reason), detail, messages[msg_idx], record_index=int(rec_idx), payload=payload, tenant_id=tenant
            )
        )
    return out
