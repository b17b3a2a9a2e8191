"""``python -m bench.ab --env KEY=VALUE``: end-to-end throughput of two worker configurations, side by side.

One run of the full bench per configuration cannot resolve a 20% difference on a shared
2-core machine: the same configuration measured minutes apart moved by ±15%, and a broker
that has taken more topics gets slower over a run. This harness measures the bench's
throughput scenario (a fresh worker, 10,000 registered meters, the whole workload produced
at once; :func:`bench.measure._throughput`) for configuration A (the production defaults)
and B (A plus ``--env``), ``--reps`` times each on one embedded broker, A and B in turns
whose order alternates, so that drift falls on both. It reports each run, the paired ratio
A ÷ B of every turn, and the ratio of the medians.

Example: the cost of the anomaly rules is ``python -m bench.ab --env ALERTS_ENABLED=false``
(A ÷ B = the throughput kept with the rules on).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench import workload as W
from bench.measure import QUICK, Bench, Config, Deployment, _log, _throughput, _wait_registry
from bench.report import machine, parse_env
from pipeline.broker import EmbeddedBroker

__all__ = ["order", "run_ab", "summarize"]

Env = tuple[tuple[str, str], ...]


def order(rep: int) -> tuple[str, str]:
    """The turn of repetition ``rep``: A then B, then B then A, and so on."""
    return ("a", "b") if rep % 2 == 0 else ("b", "a")


def summarize(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Throughputs (readings/s) of the same repetitions of A and B → medians, paired ratios A ÷ B and
    the ratio of the medians (the figure to quote; the paired ratios show how far one pair can be off)."""
    if not a or len(a) != len(b):
        raise ValueError(f"need the same number of runs of A and B, got {len(a)} and {len(b)}")
    paired = [x / y for x, y in zip(a, b, strict=True)]
    return {
        "a_readings_per_s": list(a), "b_readings_per_s": list(b),
        "a_median": statistics.median(a), "b_median": statistics.median(b),
        "paired_a_over_b": paired, "a_over_b_median_ratio": statistics.median(a) / statistics.median(b),
        "a_over_b_paired_range": [min(paired), max(paired)],
    }  # fmt: skip


def _one(bench: Bench, name: str, shape: W.Shape) -> float:
    cfg = bench.cfg
    dep = Deployment(bench, name)
    dep.register(cfg.devices)
    worker = dep.worker()
    worker.start()
    try:
        _wait_registry(worker, cfg.devices)
        tp = _throughput(bench, dep, worker, shape, cfg.polls(shape))
        if tp["rows_in_clickhouse"] != tp["rows_expected"]:
            raise RuntimeError(f"{name}: {tp['rows_in_clickhouse']} rows in ClickHouse, {tp['rows_expected']} expected")
        return float(tp["readings_per_s"])
    finally:
        worker.stop()


def run_ab(b_env: Env, reps: int, cfg: Config | None = None,
           shapes: Sequence[W.Shape] = (W.SINGLES, W.BATCHES), a_env: Env = ()) -> dict[str, Any]:  # fmt: skip
    """Throughput of A (``cfg``'s worker environment + ``a_env``) and B (+ ``b_env``), ``reps`` turns each
    per shape (see the module doc)."""
    cfg = cfg or Config()
    envs = {"a": cfg.worker_env + a_env, "b": cfg.worker_env + b_env}
    out: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": machine(),
                           "a_env": [list(p) for p in envs["a"]], "b_env": [list(p) for p in envs["b"]],
                           "devices": cfg.devices, "reps": reps}  # fmt: skip
    with (
        tempfile.TemporaryDirectory(prefix="telemetry-ab-") as tmp,
        EmbeddedBroker(log_path=Path(tmp) / "broker.log") as broker,
    ):
        for shape in shapes:
            runs: dict[str, list[float]] = {"a": [], "b": []}
            for rep in range(reps):
                for side in order(rep):
                    bench = Bench(replace(cfg, worker_env=envs[side]), broker, Path(tmp))
                    runs[side].append(_one(bench, f"{shape.name}-{side}{rep}", shape))
                    _log(f"{shape.name} {side} #{rep}: {runs[side][-1]:,.0f} readings/s")
            out[shape.name] = summarize(runs["a"], runs["b"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n")[0])
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", required=True,
                        help="configuration B: the defaults plus this worker environment (repeatable)")  # fmt: skip
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny workload (checks the harness only)")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args()
    report = run_ab(parse_env(args.env), args.reps, QUICK if args.quick else Config())
    for shape in (W.SINGLES, W.BATCHES):
        s = report[shape.name]
        lo, hi = s["a_over_b_paired_range"]
        print(f"{shape.name:8s} A {s['a_median']:>9,.0f}  B {s['b_median']:>9,.0f} readings/s (medians of "
              f"{args.reps}); A/B {s['a_over_b_median_ratio']:.2f} (pairs {lo:.2f}-{hi:.2f})", flush=True)  # fmt: skip
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
