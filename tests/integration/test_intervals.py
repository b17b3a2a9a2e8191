"""Interval consumption derived in the stream does not depend on arrival order or re-delivery.

The simulated fleet arrives with late and out-of-order readings, duplicates, rollovers, a
reset and gaps, spread over many batches. The intervals the stream wrote must equal a
single recomputation over every stored reading (the pure function that the property tests
check against true consumption) and, per device, register and UTC day, the simulator's
ground truth of how far the register advanced (within 1e-6 relative, for every day no
injected gap touches); every injected rollover must be counted and every reset flagged,
and re-consuming everything through a second consumer group must leave every interval
and rollup unchanged.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import polars as pl
import pytest

from pipeline.catalogue import load_catalogue
from pipeline.codecs import Encoder, SchemaStore
from pipeline.derive import (
    compute_intervals_many,
    generator_intervals,
    params_frame,
    register_params,
    replacements_frame,
)
from pipeline.flags import Flag
from pipeline.simulate import GroundTruth, SimConfig, build_scenario, produce
from pipeline.tenancy import Registry
from tests.conftest import Env
from tests.support import WorkerProcess

pytestmark = pytest.mark.integration
KEYS = ["tenant_id", "device_id", "quantity"]
FUEL = ["used_l", "refuel_l", "unexplained_drop_l", "runtime_s", "runtime_estimated_s"]


def _frame(worker: WorkerProcess, sql: str, columns: list[str]) -> pl.DataFrame:
    return pl.DataFrame(worker.query(sql), schema=columns, orient="row")


def _stored_intervals(worker: WorkerProcess) -> pl.DataFrame:
    return _frame(
        worker,
        "SELECT tenant_id, device_id, quantity, toUnixTimestamp64Milli(interval_start), measured, "
        "estimated, flags FROM energy_intervals ORDER BY ALL",
        [*KEYS, "interval_start_ms", "measured", "estimated", "flags"],
    )


def _stored_fuel(worker: WorkerProcess) -> pl.DataFrame:
    return _frame(
        worker,
        "SELECT tenant_id, device_id, toUnixTimestamp64Milli(interval_start), used_l, refuel_l, unexplained_drop_l, "
        "runtime_s, runtime_estimated_s FROM fuel_intervals ORDER BY ALL",
        ["tenant_id", "device_id", "interval_start_ms", *FUEL],
    )


def _assert_fuel_equals_full_recompute(worker: WorkerProcess, registry: Registry) -> pl.DataFrame:
    """Generator fuel and runtime written by the stream = one recomputation over the stored samples."""
    stream = _stored_fuel(worker)
    samples = _frame(
        worker,
        "SELECT tenant_id, device_id, quantity, toUnixTimestamp64Milli(ts), value, toInt64(src_offset) "
        "FROM readings_store FINAL WHERE quantity IN ('fuel_level', 'engine_state', 'generator_runtime')",
        ["tenant_id", "device_id", "quantity", "ts_ms", "value", "seq"],
    )
    of = {q: samples.filter(pl.col("quantity") == q).drop("quantity") for q in ("fuel_level", "engine_state")}
    runtime = samples.filter(pl.col("quantity") == "generator_runtime").drop("quantity")
    dev = ["tenant_id", "device_id"]
    params = {k: register_params("generator_runtime", registry.get(k[1]), load_catalogue())
              for k in samples.select(dev).unique().iter_rows()}  # fmt: skip
    full = generator_intervals(of["fuel_level"], of["engine_state"], runtime, keys=dev,
                               runtime_params=params_frame(params, dev)).intervals  # fmt: skip
    joined = stream.join(full, on=[*dev, "interval_start_ms"], how="full", suffix="_full")
    assert joined.height == stream.height == full.height > 100
    for col in FUEL:
        assert (joined[col] - joined[f"{col}_full"]).abs().max() < 1e-6, f"fuel {col} differs from the full recompute"
    daily = worker.query("SELECT round(sum(used_l), 6), round(sum(runtime_s), 6) FROM fuel_daily")
    assert daily == [[round(full["used_l"].sum(), 6), round(full["runtime_s"].sum(), 6)]]
    return stream


def _assert_daily_truth(daily: pl.DataFrame, truth: GroundTruth) -> None:
    """Measured per device, register and UTC day = the register's true advance (minus what a reset loses)."""
    expected = pl.DataFrame(truth.consumption).with_columns(want=pl.col("advance") - pl.col("uncounted"))
    got = expected.join(daily, on=["device_id", "quantity", "day"], how="left")
    exact = got.filter(~pl.col("gap") & ~pl.col("split"))
    registers = ["device_id", "quantity"]  # most registers have a day no gap or split touches
    assert exact.select(registers).n_unique() * 2 > got.select(registers).n_unique()
    assert exact["measured"].null_count() == 0
    off = exact.filter((pl.col("measured") - pl.col("want")).abs() > 1e-6 * pl.col("want").abs() + 1e-9)
    assert off.is_empty(), f"measured != truth:\n{off}"
    assert (exact["estimated"] == 0).all()
    # over the whole history the estimate of a gap restores the total: nothing lost, nothing counted twice
    counted = pl.col("measured").fill_null(0) + pl.col("estimated").fill_null(0)
    total = got.group_by("device_id", "quantity").agg(pl.col("want").sum(), counted.sum().alias("total"))
    off = total.filter((pl.col("total") - pl.col("want")).abs() > 1e-6 * pl.col("want").abs() + 1e-9)
    assert off.is_empty(), f"total != truth:\n{off}"
    for f in truth.faults:
        if f["kind"] in ("rollover", "reset"):  # compared on its day (or, if a gap or split touches it, in the total)
            day = datetime.fromtimestamp((f["ts"] - 1) / 1000, UTC).date().isoformat()  # day of the pair
            row = got.filter((pl.col("device_id") == f["device_id"]) & (pl.col("day") == day))
            assert row.height == 1, f"{f['kind']} of {f['device_id']} on {day} not compared"
            assert (row["uncounted"] > 0).all() == (f["kind"] == "reset")


def test_stream_intervals_equal_a_full_recompute_and_survive_replay(env: Env) -> None:
    catalogue = load_catalogue()
    scenario = build_scenario(
        SimConfig(seed=3, tenants=2, sites_per_tenant=2, days=1.0, batch=False),
        int(time.time() * 1000),
        Encoder(SchemaStore.load()),
    )
    registry = Registry()
    for m in scenario.registrations:  # the same registrations the worker sees
        from pipeline.codecs import Decoder

        registry.put(Decoder(SchemaStore.load())(m.value)[1])
    worker = env.worker(BATCH_MAX_MESSAGES="500").start()  # many small batches: context crosses batches
    try:
        produce(scenario.registrations, bootstrap=env.bootstrap, topic_prefix=env.prefix)
        worker.wait_processed({"registry.devices": len(scenario.registrations)})
        produce(scenario.telemetry, bootstrap=env.bootstrap, topic_prefix=env.prefix)
        worker.wait_processed(scenario.truth.messages)
        stream = _stored_intervals(worker)
        readings = _frame(
            worker,
            "SELECT tenant_id, device_id, quantity, toUnixTimestamp64Milli(ts), value, "
            f"toInt64(src_offset) FROM readings_store FINAL WHERE quantity IN {tuple(catalogue.cumulative_codes())}",
            [*KEYS, "ts_ms", "value", "seq"],
        )
        events = _frame(
            worker,
            "SELECT device_id, kind, toUnixTimestamp64Milli(ts) FROM register_events",
            ["device_id", "kind", "ts_ms"],
        )
        daily = _frame(
            worker,
            "SELECT device_id, quantity, toString(toDate(interval_start)), sum(measured), sum(estimated) "
            "FROM energy_intervals GROUP BY ALL",
            ["device_id", "quantity", "day", "measured", "estimated"],
        )
        rollups_before = worker.query(
            "SELECT tenant_id, day, round(total, 6), round(cost, 6) FROM consumption_daily_tenant ORDER BY ALL"
        )
        fuel = _assert_fuel_equals_full_recompute(worker, registry)
    finally:
        worker.stop()

    series = readings.select(KEYS).unique().iter_rows()
    params = {k: register_params(k[2], registry.get(k[1]), catalogue) for k in series}
    full = compute_intervals_many(
        readings.with_columns(pl.col("seq").cast(pl.Int64)),
        params_frame(params, KEYS),
        keys=KEYS,
        replacements=replacements_frame(params, KEYS),
    ).intervals
    full = full.select(*KEYS, "interval_start_ms", "measured", "estimated", "flags").sort([*KEYS, "interval_start_ms"])
    assert stream.height == full.height > 1000
    joined = stream.join(full, on=[*KEYS, "interval_start_ms"], suffix="_full")
    assert joined.height == full.height
    for col in ("measured", "estimated"):
        diff = (joined[col] - joined[f"{col}_full"]).abs() - 1e-6 * joined[f"{col}_full"].abs()
        assert diff.max() <= 1e-6, f"{col} differs from the full recompute"
    assert (joined["flags"] == joined["flags_full"].cast(pl.Int64)).all()

    _assert_daily_truth(daily, scenario.truth)
    faults = scenario.truth.faults
    for kind, flag in (("rollover", Flag.ROLLOVER), ("reset", Flag.RESET)):
        injected = [f for f in faults if f["kind"] == kind]
        assert injected, f"the scenario injects no {kind}"
        for f in injected:
            found = events.filter((pl.col("device_id") == f["device_id"]) & (pl.col("kind") == kind))
            assert found.height >= 1, f"{kind} of {f['device_id']} not detected"
            flagged = stream.filter((pl.col("device_id") == f["device_id"]) & (pl.col("flags") & int(flag) != 0))
            assert flagged.height >= 1
    gaps = [f for f in faults if f["kind"] == "gap"]
    for f in gaps:
        est = stream.filter((pl.col("device_id") == f["device_id"]) & (pl.col("flags") & int(Flag.ESTIMATED) != 0))
        assert est.height >= 1, f"gap of {f['device_id']} not estimated"

    replay = env.worker(CONSUMER_GROUP=env.group + "-replay").start()
    try:
        replay.wait_processed(scenario.truth.messages | {"registry.devices": len(scenario.registrations)})
        assert _stored_intervals(replay).equals(stream)
        assert _stored_fuel(replay).equals(fuel)
        assert (
            replay.query(
                "SELECT tenant_id, day, round(total, 6), round(cost, 6) FROM consumption_daily_tenant ORDER BY ALL"
            )
            == rollups_before
        )
    finally:
        replay.stop()
