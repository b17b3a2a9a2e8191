"""Smoke test of the benchmark harness (not of performance: no figure is compared with a target).

Runs ``telemetry bench --quick``'s code on a tiny workload, without the two-worker
scaling run, and checks that the JSON has every figure, each a positive number.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def test_quick_bench_writes_every_figure(tmp_path: Path) -> None:
    from bench.measure import QUICK
    from bench.report import run_bench

    cfg = dataclasses.replace(
        QUICK, devices=500, single_polls=1, batch_polls=2, latency_seconds=2.0, rss_devices=1000, naive_seconds=2.0,
        scaling=False,
    )  # fmt: skip
    out = tmp_path / "bench.json"
    run_bench(quick=True, out=out, cfg=cfg)
    report = json.loads(out.read_text())

    assert report["mode"] == "quick" and report["date"]
    assert report["machine"]["nproc"] >= 1 and report["machine"]["python"]
    for shape in ("singles", "batches"):
        r = report[shape]
        for section, keys in {
            "throughput": ("readings_per_s", "values_per_s", "messages_per_s", "e2e_seconds"),
            "latency": ("offered_readings_per_s", "p50_ms", "p99_ms", "rows"),
            "ceiling": ("messages_per_s", "readings_per_s"),
            "naive": ("messages_per_s", "readings_per_s"),
        }.items():
            for key in keys:
                assert r[section][key] > 0, (shape, section, key, r[section])
        assert r["throughput"]["rows_in_clickhouse"] == r["throughput"]["rows_expected"]
        assert r["peak_rss_mb"] > 0
        assert r["ratio_pipeline_to_ceiling"] > 0 and r["ratio_pipeline_to_naive"] > 0
    assert report["rss_100k"]["peak_rss_mb"] > 0 and report["rss_100k"]["devices"] == 1000
    assert set(report["targets"]) == {
        "batches_readings_per_s", "singles_readings_per_s", "p99_ms", "rss_100k_devices_mb",
    }  # fmt: skip
