"""``python -m bench.offline``: the worker's processing stage in process, with and without a part of it.

The end-to-end bench (``python -m bench``) is the measure of record, but one run of it on a
shared 2-core machine swings by ±20%, so two configurations measured minutes apart compare
badly. This harness takes the broker, ClickHouse and the other threads out: it encodes the
bench's workload, cuts it into the worker's batches (``BATCH_MAX_MESSAGES`` messages or
8 MiB of message bytes), and times the readings processor the worker builds (decode →
validate → de-duplicate → tag → interval and fuel derivation → anomaly rules) on them,
with the anomaly rules and without, alternating, in one process. It reports CPU seconds
per configuration and their ratio: the part of the processing thread the rules take,
which is what they cost the worker when that thread is its critical path.

Stored readings are not read back (every series is new to the derivers, as at a worker's
start, and ClickHouse would return nothing for them either).
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from bench import workload as W
from bench.measure import Config
from pipeline.anomaly import Policy
from pipeline.anomaly.lifecycle import AlertTracker
from pipeline.anomaly.meter_rules import meter_rules
from pipeline.anomaly.stage import MeterAlerts
from pipeline.catalogue import load_catalogue
from pipeline.codecs import Decoder, SchemaStore
from pipeline.envelope import RawMessage
from pipeline.settings import Settings
from pipeline.tenancy import Registry
from pipeline.worker.app import BATCH_MAX_BYTES
from pipeline.worker.processors import ReadingsProcessor
from pipeline.worker.wiring import meter_derive, readings_processor

__all__ = ["batches", "compare"]

_STORED = {"tenant_id": pl.Utf8, "device_id": pl.Utf8, "quantity": pl.Utf8, "ts_ms": pl.Int64, "value": pl.Float64,
           "seq": pl.Int64}  # fmt: skip


def _nothing_stored(devices: list[str], quantities: list[str], since_ms: int) -> pl.DataFrame:
    return pl.DataFrame(schema=_STORED)


def batches(
    messages: Sequence[RawMessage], max_messages: int, max_bytes: int = BATCH_MAX_BYTES
) -> Iterator[list[RawMessage]]:
    """The worker's batches of a backlog: up to ``max_messages`` messages or ``max_bytes`` value bytes."""
    out: list[RawMessage] = []
    size = 0
    for m in messages:
        n = len(m.value or b"")
        if out and (len(out) >= max_messages or size + n > max_bytes):
            yield out
            out, size = [], 0
        out.append(m)
        size += n
    if out:
        yield out


def _processor(registry: Registry, alerts: bool, settings: Settings) -> ReadingsProcessor:
    """The readings processor as ``build_worker`` wires it from ``settings`` (no ClickHouse behind it, no gap
    attribution: the bench's meters have no SIM)."""
    catalogue = load_catalogue()
    derive = meter_derive(settings, catalogue, registry, _nothing_stored)
    if alerts:
        policy = Policy()
        derive = MeterAlerts(meter_rules(), AlertTracker(policy), policy, registry, derive=derive)
    decoder = Decoder(SchemaStore.load(), max_bytes=settings.max_message_bytes)
    return readings_processor(settings, catalogue, registry, decoder, derive)


def compare(settings: Settings, shape: W.Shape, devices: int, polls: int, rounds: int, warmup: int = 2,
            max_messages: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Seconds per configuration (the best of ``rounds``, excluding the first ``warmup`` batches, which
    create every series) and the rows each wrote; the two must write the same readings.
    ``max_messages``: messages per batch (default: the worker's ``BATCH_MAX_MESSAGES``)."""
    now = int(time.time() * 1000) // W.POLL_MS * W.POLL_MS
    base = W.straddling_base(now - W.POLL_MS, polls)
    writer = W.AvroWriter()
    registry = Registry()
    for i in range(devices):
        registry.put(W.registration(i, base - 86_400_000))
    encoded = W.encode_polls(shape, devices, range(polls), lambda r, _m: base + r * W.POLL_MS, writer)
    raw = [RawMessage("meter.readings", 0, i, k, v) for i, (k, v) in enumerate(encoded)]
    cut = list(batches(raw, max_messages or settings.batch_max_messages))
    if len(cut) <= warmup:
        raise ValueError(f"{len(cut)} batch(es), all of them warm-up: more polls or devices")
    cpu: dict[str, float] = {}
    wall: dict[str, float] = {}
    rows: dict[str, int] = {}
    for _ in range(rounds):
        for name, alerts in (("alerts_off", False), ("alerts_on", True)):
            process = _processor(registry, alerts, settings)
            gc.collect()
            spent, elapsed, written = 0.0, 0.0, 0
            for k, batch in enumerate(cut):
                c, t = time.process_time(), time.perf_counter()
                result = process(batch, now)
                if k >= warmup:
                    spent += time.process_time() - c
                    elapsed += time.perf_counter() - t
                written += result.tables["readings_store"].num_rows
            cpu[name] = min(cpu.get(name, spent), spent)
            wall[name] = min(wall.get(name, elapsed), elapsed)
            rows[name] = written
    return {
        "shape": shape.name, "devices": devices, "polls": polls, "readings": devices * polls,
        "batches": len(cut), "timed_batches": len(cut) - warmup, "rounds": rounds,
        "cpu_seconds": cpu, "wall_seconds": wall,
        "readings_store_rows": rows, "on_over_off_cpu": cpu["alerts_on"] / cpu["alerts_off"],
        "on_over_off_wall": wall["alerts_on"] / wall["alerts_off"],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.offline", description=__doc__.split("\n")[0])
    full = Config()
    parser.add_argument("--devices", type=int, default=full.devices)
    parser.add_argument("--polls", type=int, default=None, help="per shape; default: the bench's (20 and 60)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args()
    settings = Settings()  # the worker's settings from the environment, e.g. DERIVE_FUEL=false
    report = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "runs": []}
    for shape, polls in ((W.SINGLES, full.single_polls), (W.BATCHES, full.batch_polls)):
        r = compare(settings, shape, args.devices, args.polls or polls, args.rounds)
        report["runs"].append(r)
        cpu, wall = r["cpu_seconds"], r["wall_seconds"]
        print(f"{shape.name:8s} {r['timed_batches']:3d} batches, alerts off / on: CPU {cpu['alerts_off']:.2f} / "
              f"{cpu['alerts_on']:.2f} s (x{r['on_over_off_cpu']:.2f}), wall {wall['alerts_off']:.2f} / "
              f"{wall['alerts_on']:.2f} s (x{r['on_over_off_wall']:.2f}); processing rate on/off "
              f"{1 / r['on_over_off_wall']:.2f}", flush=True)  # fmt: skip
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
