"""Generator fuel derived in the stream equals one recomputation over all samples, in any arrival order.

Generator samples (fuel level, engine state, runtime register) of a simulated fleet with grid
outages (the engine runs and burns fuel), refuels and a stolen-fuel drop are fed to
:class:`FuelDeriver` in small batches, in send order and in a random order, with a store
that lags one batch behind (the sink persists batch N while batch N+1 is derived). The
last row written for every interval must equal the pure function over the full set.
"""

from __future__ import annotations

import random

import polars as pl
import pytest

from pipeline.catalogue import load_catalogue
from pipeline.codecs import Decoder, Encoder, SchemaStore, decode_readings
from pipeline.derive import generator_intervals, params_frame, register_params
from pipeline.envelope import RawMessage
from pipeline.simulate import SimConfig, build_scenario
from pipeline.tenancy import Registry
from pipeline.worker.fuel import CODES, DEV, FuelDeriver

NOW = 1_795_400_000_000
SAMPLES = {"tenant_id": pl.Utf8, "device_id": pl.Utf8, "quantity": pl.Utf8, "ts_ms": pl.Int64, "value": pl.Float64,
           "seq": pl.Int64}  # fmt: skip
VALUES = ["used_l", "refuel_l", "unexplained_drop_l", "runtime_s", "runtime_estimated_s"]


def _generator_samples() -> tuple[pl.DataFrame, Registry, list[dict[str, object]]]:
    store = SchemaStore.load()
    decode = Decoder(store)
    scenario = build_scenario(SimConfig(seed=5, tenants=1, sites_per_tenant=4, days=1.5, batch=False), NOW,
                              Encoder(store))  # fmt: skip
    registry = Registry()
    for m in scenario.registrations:
        registry.put(decode(m.value)[1])
    messages = [RawMessage("t", 0, i, m.key, m.value) for i, m in enumerate(scenario.telemetry)
                if m.topic == "meter.readings"]  # fmt: skip
    frame, _ = decode_readings(messages, decode)
    frame = frame.filter(pl.col("quantity").is_in(CODES), pl.col("value").is_finite(),
                         pl.col("ts_ms").is_between(NOW - 30 * 86_400_000, NOW),
                         pl.col("device_id").map_elements(lambda d: registry.get(d) is not None,
                                                          return_dtype=pl.Boolean))  # fmt: skip
    tenants = {d: registry.get(d).tenant_id for d in frame["device_id"].unique()}  # type: ignore[union-attr]
    frame = frame.with_columns(tenant_id=pl.col("device_id").replace_strict(tenants),
                               src_offset=pl.col("msg_idx").cast(pl.UInt64))  # fmt: skip
    return frame, registry, scenario.truth.events + scenario.truth.faults


def _feed(frame: pl.DataFrame, registry: Registry, order: list[int], batch: int) -> pl.DataFrame:
    """Latest row written per interval when the messages arrive in ``order``, ``batch`` at a time."""
    stored: list[pl.DataFrame] = []

    def fetch(devices: list[str], quantities: list[str], since_ms: int) -> pl.DataFrame:
        rows = pl.concat(stored) if stored else pl.DataFrame(schema=SAMPLES)
        return rows.filter(pl.col("device_id").is_in(devices), pl.col("quantity").is_in(quantities),
                           pl.col("ts_ms") >= since_ms)  # fmt: skip

    deriver = FuelDeriver(load_catalogue(), registry, fetch, tail_ms=3_600_000)  # a short tail: more fetches
    written, pending = [], None
    for n, start in enumerate(range(0, len(order), batch)):
        part = frame.filter(pl.col("msg_idx").is_in(order[start : start + batch]))
        out = deriver(part, NOW)
        if out:
            rows = pl.from_arrow(out["fuel_intervals_store"])
            written.append(rows.with_columns(batch=pl.lit(n)))  # type: ignore[union-attr]
        if pending is not None:
            stored.append(pending)
        pending = part.select(*DEV, "quantity", "ts_ms", "value", seq=pl.col("src_offset").cast(pl.Int64))
    return (pl.concat(written).with_columns(interval_start_ms=pl.col("interval_start").dt.epoch("ms")).sort("batch")
            .group_by([*DEV, "interval_start_ms"]).agg(pl.col(*VALUES, "n_readings").last()))  # fmt: skip


@pytest.mark.parametrize("shuffled", [False, True])
def test_incremental_fuel_equals_the_full_recompute(shuffled: bool) -> None:
    frame, registry, events = _generator_samples()
    order = sorted(frame["msg_idx"].unique().to_list())
    if shuffled:
        random.Random(11).shuffle(order)
    latest = _feed(frame, registry, order, 40)

    samples = frame.select(*DEV, "quantity", "ts_ms", "value", seq=pl.col("src_offset").cast(pl.Int64))
    of = {q: samples.filter(pl.col("quantity") == q).drop("quantity") for q in CODES}
    params = {k: register_params("generator_runtime", registry.get(k[1]), load_catalogue())
              for k in samples.select(DEV).unique().iter_rows()}  # fmt: skip
    full = generator_intervals(of["fuel_level"], of["engine_state"], of["generator_runtime"], keys=DEV,
                               runtime_params=params_frame(params, DEV)).intervals  # fmt: skip
    joined = latest.join(full, on=[*DEV, "interval_start_ms"], how="full", suffix="_full")
    assert joined.height == full.height == latest.height > 300
    for col in VALUES:
        assert (joined[col] - joined[f"{col}_full"]).abs().max() < 1e-9, col  # type: ignore[operator]
    assert (joined["n_readings"] == joined["n_readings_full"]).all()

    # the fleet really exercises the rules: running engines burn fuel, refuels and a theft show up
    kinds = {str(e["kind"]) for e in events}
    assert {"generator_run", "refuel", "fuel_drop"} <= kinds
    assert full["used_l"].sum() > 10 and full["runtime_s"].sum() > 3600
    assert full["refuel_l"].sum() > 50 and full["unexplained_drop_l"].sum() > 10


def test_a_late_engine_state_restates_every_level_pair_up_to_the_next_state() -> None:
    """States sent only on change: a late 'running' restates all later drops as fuel used."""
    m5, t0 = 300_000, NOW - NOW % 3_600_000 - 6 * 3_600_000
    levels = [("t", "dg", "fuel_level", t0 + i * m5, 400.0 - 2.0 * i, i) for i in range(40)]
    stopped, running = ("t", "dg", "engine_state", t0, 0.0, 100), ("t", "dg", "engine_state", t0 + 3 * m5, 1.0, 101)
    stored: list[tuple[object, ...]] = []

    def fetch(devices: list[str], quantities: list[str], since_ms: int) -> pl.DataFrame:
        return pl.DataFrame(stored, schema=SAMPLES, orient="row").filter(pl.col("ts_ms") >= since_ms)

    def batch(rows: list[tuple[object, ...]]) -> pl.DataFrame:
        frame = pl.DataFrame(rows, schema=SAMPLES, orient="row")
        return frame.rename({"seq": "src_offset"}).with_columns(pl.col("src_offset").cast(pl.UInt64))

    deriver = FuelDeriver(load_catalogue(), Registry(), fetch)
    first = pl.from_arrow(deriver(batch([*levels, stopped]), NOW)["fuel_intervals_store"])
    stored += [*levels, stopped]
    assert first["used_l"].sum() == 0 and first["unexplained_drop_l"].sum() == pytest.approx(78.0)  # type: ignore[index]
    second = pl.from_arrow(deriver(batch([running]), NOW)["fuel_intervals_store"])
    assert second["used_l"].sum() == pytest.approx(2.0 * 37)  # type: ignore[index]
    assert second["interval_start"].max() == first["interval_start"].max()  # type: ignore[index]


def test_a_drop_across_a_reading_gap_is_fuel_used_if_the_engine_ran_at_either_end() -> None:
    """Levels at 0, 5, 10 and 60, 65, 70 min (a 50-minute gap, expected period 15 min); a state-only
    'stopped' at 20 min. The drop across the gap is unexplained while the engine is only known
    stopped; a late 'running' at 8 min makes it fuel used, in every interval the gap spans."""
    m, t0 = 60_000, NOW - NOW % 3_600_000 - 6 * 3_600_000
    at = ((0, 400.0), (5, 398.0), (10, 396.0), (60, 380.0), (65, 378.0), (70, 376.0))
    levels = [("t", "dg", "fuel_level", t0 + k * m, v, k) for k, v in at]
    states = [("t", "dg", "engine_state", t0, 0.0, 100), ("t", "dg", "engine_state", t0 + 20 * m, 0.0, 101)]
    stored: list[tuple[object, ...]] = []

    def fetch(devices: list[str], quantities: list[str], since_ms: int) -> pl.DataFrame:
        return pl.DataFrame(stored, schema=SAMPLES, orient="row").filter(pl.col("ts_ms") >= since_ms)

    def run(rows: list[tuple[object, ...]]) -> dict[int, tuple[float, float]]:
        frame = pl.DataFrame(rows, schema=SAMPLES, orient="row").rename({"seq": "src_offset"})
        frame = frame.with_columns(pl.col("src_offset").cast(pl.UInt64))
        out = pl.from_arrow(deriver(frame, NOW)["fuel_intervals_store"])
        return {(r[0] - t0) // m: (round(r[1], 6), round(r[2], 6)) for r in out.select(  # type: ignore[union-attr]
            pl.col("interval_start").dt.epoch("ms"), "used_l", "unexplained_drop_l").iter_rows()}  # fmt: skip

    deriver = FuelDeriver(load_catalogue(), Registry(), fetch)
    assert run([*levels, *states]) == {0: (0.0, 5.6), 15: (0.0, 4.8), 30: (0.0, 4.8), 45: (0.0, 4.8), 60: (0.0, 4.0)}
    stored += [*levels, *states]
    late = run([("t", "dg", "engine_state", t0 + 8 * m, 1.0, 102)])
    assert late == {0: (3.6, 2.0), 15: (4.8, 0.0), 30: (4.8, 0.0), 45: (4.8, 0.0), 60: (0.0, 4.0)}
