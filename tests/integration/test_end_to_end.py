"""A seeded fleet with injected faults through the real broker and a real worker.

The rows in ClickHouse and the records on the dead-letter topic must match the
simulator's ground truth exactly; re-delivery must leave the results unchanged.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from pipeline.codecs import Encoder, SchemaStore
from pipeline.simulate import GroundTruth, Scenario, SimConfig, build_scenario, produce
from tests.conftest import Env
from tests.support import WorkerProcess, consume_all, count_reasons

pytestmark = pytest.mark.integration

CONFIG = SimConfig(seed=11, tenants=2, sites_per_tenant=2, days=0.5)


def _scenario(config: SimConfig = CONFIG) -> Scenario:
    return build_scenario(config, int(time.time() * 1000), Encoder(SchemaStore.load()))


def _ingest(env: Env, worker: WorkerProcess, scenario: Scenario) -> None:
    produce(scenario.registrations, bootstrap=env.bootstrap, topic_prefix=env.prefix)
    worker.wait_processed({"registry.devices": len(scenario.registrations)})
    produce(scenario.telemetry, bootstrap=env.bootstrap, topic_prefix=env.prefix)
    worker.wait_processed(scenario.truth.messages | {"registry.devices": len(scenario.registrations)})


def _rows_by_tenant(worker: WorkerProcess) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for table in ("readings", "sim_usage", "device_registry"):
        rows = worker.query(f"SELECT tenant_id, count() FROM {table} GROUP BY tenant_id")
        out[table] = {tenant: int(n) for tenant, n in rows}
    return out


def _deadletter_summary(worker: WorkerProcess) -> dict[str, int]:
    rows = worker.query("SELECT reason, sum(records) FROM deadletter_summary GROUP BY reason")
    return {reason: int(n) for reason, n in rows}


def _fingerprint(worker: WorkerProcess) -> list[Any]:
    """Aggregates that change if any row is duplicated, lost or altered."""
    return worker.query(
        "SELECT (SELECT count() FROM readings), (SELECT round(sum(value), 3) FROM readings), "
        "(SELECT count() FROM sim_usage), (SELECT sum(bytes_up + bytes_down) FROM sim_usage), "
        "(SELECT count() FROM device_registry), (SELECT sum(records) FROM deadletter_summary)"
    )[0]


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return _scenario()


def test_fleet_matches_ground_truth_and_redelivery_changes_nothing(env: Env, scenario: Scenario) -> None:
    truth: GroundTruth = scenario.truth
    assert truth.expected_deadletter and truth.exact_duplicates_dropped and truth.luhn_flagged  # faults injected

    first = env.worker().start()
    try:
        _ingest(env, first, scenario)
        assert _rows_by_tenant(first) == truth.expected_rows
        assert _deadletter_summary(first) == truth.expected_deadletter
        dead = consume_all(env.bootstrap, env.topic("deadletter"))
        assert count_reasons(dead) == truth.expected_deadletter
        metrics = first.metrics()
        assert _metric(metrics, "telemetry_duplicates_dropped_total") == truth.exact_duplicates_dropped
        assert _metric(metrics, "telemetry_records_rejected_total") == sum(truth.expected_deadletter.values())
        luhn = first.query("SELECT count() FROM sim_usage WHERE bitAnd(flags, 8) != 0")[0][0]
        assert int(luhn) == truth.luhn_flagged
        # every dead letter says where it came from
        assert all(
            {k for k, _ in m.headers()}
            >= {"dl.reason", "dl.detail", "dl.source.topic", "dl.source.partition", "dl.source.offset"}
            for m in dead
        )
        before = _fingerprint(first)
    finally:
        first.stop()

    # A second consumer group reads the same range into the same database: nothing changes.
    second = env.worker(CONSUMER_GROUP=env.group + "-replay").start()
    try:
        second.wait_processed(truth.messages | {"registry.devices": len(scenario.registrations)})
        assert _fingerprint(second) == before
        assert _rows_by_tenant(second) == truth.expected_rows
    finally:
        second.stop()


def test_worker_killed_mid_stream_and_restarted_loses_and_duplicates_nothing(env: Env) -> None:
    scenario = _scenario(SimConfig(seed=5, tenants=1, sites_per_tenant=2, days=0.5, faults=False))
    worker = env.worker().start()
    produce(scenario.registrations, bootstrap=env.bootstrap, topic_prefix=env.prefix)
    worker.wait_processed({"registry.devices": len(scenario.registrations)})
    produce(scenario.telemetry, bootstrap=env.bootstrap, topic_prefix=env.prefix)
    deadline = time.monotonic() + 60
    while worker.status()["processed"].get("meter.readings", 0) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.kill()  # SIGKILL: no clean shutdown, no final commit

    restarted = env.worker().start()
    try:
        total = scenario.truth.messages
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            rows = restarted.query("SELECT count() FROM readings")[0][0]
            if int(rows) >= scenario.truth.total_rows("readings"):
                break
            time.sleep(0.5)
        assert restarted.status()["processed"]["meter.readings"] <= total["meter.readings"]
        assert _rows_by_tenant(restarted) == scenario.truth.expected_rows
    finally:
        restarted.stop()
