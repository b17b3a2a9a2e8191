"""The stream's incremental interval derivation equals one recomputation over all readings.

Readings of a simulated fleet (late and out-of-order ones included) are fed in arrival
order, in small batches, to :class:`IntervalDeriver`, whose store lags one batch behind as
it does when the sink persists batch N while batch N+1 is prepared. The last value written
for every interval must equal the pure function over the full set of readings.
"""

from __future__ import annotations

import polars as pl
import pytest

from pipeline.catalogue import load_catalogue
from pipeline.codecs import Decoder, Encoder, SchemaStore, decode_readings
from pipeline.derive import compute_intervals_many, params_frame, register_params, replacements_frame
from pipeline.envelope import RawMessage
from pipeline.simulate import SimConfig, build_scenario
from pipeline.tenancy import Registry
from pipeline.worker.derive import KEYS, IntervalDeriver

NOW = 1_795_400_000_000
SERIES = {
    "tenant_id": pl.Utf8,
    "device_id": pl.Utf8,
    "quantity": pl.Utf8,
    "ts_ms": pl.Int64,
    "value": pl.Float64,
    "seq": pl.Int64,
}


def _fleet_readings() -> tuple[pl.DataFrame, Registry]:
    store = SchemaStore.load()
    decode = Decoder(store)
    scenario = build_scenario(
        SimConfig(seed=3, tenants=1, sites_per_tenant=2, days=1.0, batch=False), NOW, Encoder(store)
    )
    registry = Registry()
    for m in scenario.registrations:
        registry.put(decode(m.value)[1])
    messages = [
        RawMessage("t", 0, i, m.key, m.value) for i, m in enumerate(scenario.telemetry) if m.topic == "meter.readings"
    ]
    frame, _ = decode_readings(messages, decode)
    cumulative = load_catalogue().cumulative_codes()
    frame = frame.filter(
        pl.col("quantity").is_in(cumulative),
        pl.col("value").is_finite(),
        pl.col("ts_ms").is_between(NOW - 30 * 86_400_000, NOW),
    )
    frame = frame.filter(
        pl.col("device_id").map_elements(lambda d: registry.get(d) is not None, return_dtype=pl.Boolean)
    )
    tenants = {d: registry.get(d).tenant_id for d in frame["device_id"].unique()}  # type: ignore[union-attr]
    frame = frame.with_columns(
        tenant_id=pl.col("device_id").replace_strict(tenants), src_offset=pl.col("msg_idx").cast(pl.UInt64)
    )
    return frame.unique(["device_id", "quantity", "ts_ms"], keep="first", maintain_order=True), registry


@pytest.mark.parametrize("batch_messages", [300, 2000])
def test_incremental_intervals_equal_the_full_recompute_with_a_lagging_store(batch_messages: int) -> None:
    catalogue = load_catalogue()
    frame, registry = _fleet_readings()
    stored: list[pl.DataFrame] = []

    def fetch(devices: list[str], quantities: list[str], since_ms: int) -> pl.DataFrame:
        rows = pl.concat(stored) if stored else pl.DataFrame(schema=SERIES)
        return rows.filter(
            pl.col("device_id").is_in(devices), pl.col("quantity").is_in(quantities), pl.col("ts_ms") >= since_ms
        )

    deriver = IntervalDeriver(catalogue, registry, fetch, tail_ms=3_600_000)  # a short tail: more fetches
    written, pending = [], None
    order = sorted(frame["msg_idx"].unique().to_list())
    for n, start in enumerate(range(0, len(order), batch_messages)):
        part = frame.filter(pl.col("msg_idx").is_in(order[start : start + batch_messages]))
        rows = pl.from_arrow(deriver(part, NOW)["intervals_store"])
        written.append(rows.with_columns(batch=pl.lit(n)))  # type: ignore[union-attr]
        if pending is not None:
            stored.append(pending)  # batch N reaches the store only after batch N+1 was derived
        pending = part.select(*KEYS, "ts_ms", "value", seq=pl.col("src_offset").cast(pl.Int64))
    stored.append(pending)

    latest = (
        pl.concat(written)
        .with_columns(interval_start_ms=pl.col("interval_start").dt.epoch("ms"))
        .sort("batch")
        .group_by([*KEYS, "interval_start_ms"])
        .agg(pl.col("measured", "estimated", "flags").last())
    )
    readings = pl.concat(stored)
    params = {
        k: register_params(k[2], registry.get(k[1]), catalogue) for k in readings.select(KEYS).unique().iter_rows()
    }
    full = compute_intervals_many(
        readings, params_frame(params, KEYS), keys=KEYS, replacements=replacements_frame(params, KEYS)
    ).intervals
    joined = latest.join(full, on=[*KEYS, "interval_start_ms"], how="full", suffix="_full")
    assert joined.height == full.height == latest.height > 500
    assert (joined["measured"] - joined["measured_full"]).abs().max() < 1e-6  # type: ignore[operator]
    assert (joined["estimated"] - joined["estimated_full"]).abs().max() < 1e-6  # type: ignore[operator]
    assert (joined["flags"] == joined["flags_full"]).all()
