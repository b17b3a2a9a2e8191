"""The benchmark scenarios: throughput, latency at half load, peak RSS, references, scaling.

Each scenario gets its own deployment on the one embedded broker: a topic
prefix, a consumer group and a chDB directory, so nothing left over from one
scenario is counted in another.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import workload as W
from bench.procs import BenchWorker, cpu_seconds
from bench.references import aiokafka_ceiling
from pipeline.broker import EmbeddedBroker, ensure_topics

READINGS = "meter.readings"
REGISTRY = "registry.devices"
CATCH_UP_MS = 10 * 60_000  # the last throughput poll is this long before the latency phase


def history_base(polls: int) -> int:
    """ts of poll 0 of a throughput workload: recent history a fleet catches up on, ending 10-25 min ago,
    with a 15-min boundary in its middle (:func:`bench.workload.straddling_base`)."""
    return W.straddling_base(int(time.time() * 1000) - CATCH_UP_MS, polls)


@dataclass(frozen=True)
class Config:
    devices: int = 10_000
    single_polls: int = 20  # 200,000 single-reading messages
    batch_polls: int = 60  # 600,000 readings in 1,200 gateway batches
    latency_seconds: float = 15.0
    rss_devices: int = 100_000
    rss_polls: int = 3
    rss_seconds: float = 150.0  # time box of the RSS run's processing
    naive_seconds: float = 15.0
    scaling_polls: int = 40
    partitions: int = 4
    scaling: bool = True
    # extra environment for the pipeline workers (e.g. DERIVE_INTERVALS=false for an ablation);
    # empty = the production defaults
    worker_env: tuple[tuple[str, str], ...] = ()

    def polls(self, shape: W.Shape) -> int:
        """Polls of the throughput workload of ``shape``."""
        return self.single_polls if shape.singles else self.batch_polls


QUICK = Config(
    devices=1_000,
    single_polls=2,
    batch_polls=4,
    latency_seconds=3.0,
    rss_devices=2_000,
    rss_polls=1,
    naive_seconds=3.0,
    scaling_polls=2,
)


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Deployment:
    """One isolated pipeline on the shared broker: own topics, consumer group and chDB path(s)."""

    def __init__(self, bench: Bench, name: str) -> None:
        self.bench = bench
        self.name = name
        tag = uuid.uuid4().hex[:6]
        self.prefix = f"bench.{name}.{tag}."
        self.group = f"bench-{name}-{tag}"
        self.dir = bench.tmp / name
        self.dir.mkdir(parents=True, exist_ok=True)
        ensure_topics(bench.bootstrap, self.prefix, bench.cfg.partitions)

    def topic(self, name: str) -> str:
        return self.prefix + name

    def worker(self, n: int = 0) -> BenchWorker:
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": self.bench.bootstrap,
            "TOPIC_PREFIX": self.prefix,
            "TOPIC_PARTITIONS": str(self.bench.cfg.partitions),
            "CONSUMER_GROUP": self.group,
            # chDB: one process per data directory, so every worker has its own
            "CLICKHOUSE_URL": f"chdb://{self.dir / f'clickhouse-{n}'}?database=bench",
            "DATA_DIR": str(self.dir / f"data-{n}"),
            "LOG_LEVEL": "WARNING",
            **dict(self.bench.cfg.worker_env),
        }
        return BenchWorker(env, self.dir / f"worker-{n}.log")

    def register(self, n_devices: int) -> None:
        msgs = W.registrations(n_devices, self.bench.writer, int(time.time() * 1000))
        W.produce_all(self.bench.bootstrap, self.topic(REGISTRY), msgs)


class Bench:
    def __init__(self, cfg: Config, broker: EmbeddedBroker, tmp: Path) -> None:
        self.cfg = cfg
        self.broker = broker
        self.bootstrap = broker.bootstrap
        self.tmp = tmp
        self.writer = W.AvroWriter()

    def broker_cpu(self) -> float:
        proc = getattr(self.broker, "_proc", None)
        return cpu_seconds(proc.pid) if proc is not None else 0.0


def _wait_registry(worker: BenchWorker, n: int, timeout: float = 300.0) -> None:
    worker.wait_for("registry", lambda: worker.status().get("registry_subjects", 0) >= n, timeout, interval=0.2)


def _throughput(bench: Bench, dep: Deployment, worker: BenchWorker, shape: W.Shape, polls: int) -> dict[str, Any]:
    """Produce the whole workload as fast as possible into a running, idle worker; time until all rows are in."""
    cfg = bench.cfg
    base = history_base(polls)
    t = time.perf_counter()
    msgs = W.encode_polls(shape, cfg.devices, range(polls), lambda r, _m: base + r * W.POLL_MS, bench.writer)
    encode_s = time.perf_counter() - t
    readings = cfg.devices * polls
    topic = dep.topic(READINGS)
    before = worker.processed(READINGS)
    cpu0, bcpu0 = worker.cpu_seconds(), bench.broker_cpu()
    _log(f"{shape.name}: producing {len(msgs):,} messages ({readings:,} readings)")
    first, acked = W.produce_all(bench.bootstrap, topic, msgs)
    expected = before + len(msgs)
    done = worker.wait_for("throughput", lambda: worker.processed(READINGS) >= expected, 600)
    cpu1, bcpu1 = worker.cpu_seconds(), bench.broker_cpu()
    rows = int(worker.scalar(f"SELECT count() FROM readings_store WHERE src_topic = '{topic}'"))
    seconds = done - first
    return {
        "messages": len(msgs),
        "readings": readings,
        "values": readings * W.VALUES_PER_READING,
        "rows_in_clickhouse": rows,
        "rows_expected": readings * W.VALUES_PER_READING,
        "encode_seconds": round(encode_s, 3),
        "produce_seconds": round(acked - first, 3),
        "e2e_seconds": round(seconds, 3),
        "readings_per_s": readings / seconds,
        "values_per_s": readings * W.VALUES_PER_READING / seconds,
        "messages_per_s": len(msgs) / seconds,
        "worker_cpu_cores": (cpu1 - cpu0) / seconds,
        "broker_cpu_cores": (bcpu1 - bcpu0) / seconds,
        "encode_readings_per_s": readings / encode_s if encode_s else 0.0,
    }


def _latency(
    bench: Bench, dep: Deployment, worker: BenchWorker, shape: W.Shape, first_poll: int, readings_per_s: float,
    encode_rate: float,
) -> dict[str, Any]:  # fmt: skip
    """Offer ``readings_per_s`` for ``latency_seconds``; per row latency = ingested_at - ts.

    Every reading's ``ts`` is its message's scheduled produce time, so the latency
    includes any lag of the producer behind its schedule (open loop).
    """
    cfg = bench.cfg
    msg_rate = readings_per_s / shape.batch_size
    n_msgs = max(2, int(msg_rate * cfg.latency_seconds))
    per_round = math.ceil(cfg.devices / shape.batch_size)
    rounds = math.ceil(n_msgs / per_round)
    n_readings_est = n_msgs * min(shape.batch_size, cfg.devices)
    margin = 1.5 * n_readings_est / max(encode_rate, 1.0) + 1.0
    t0 = time.time() + margin
    msgs = W.encode_polls(
        shape,
        cfg.devices,
        range(first_poll, first_poll + rounds),
        lambda _r, m: int((t0 + m / msg_rate) * 1000),
        bench.writer,
    )[:n_msgs]
    if time.time() > t0:
        _log(f"warning: encoding took longer than planned ({time.time() - t0:.2f}s late)")
    topic = dep.topic(READINGS)
    before = worker.processed(READINGS)
    _log(f"{shape.name}: latency at {readings_per_s:,.0f} readings/s ({msg_rate:,.1f} msg/s), {cfg.latency_seconds}s")
    worst_lag = W.produce_paced(bench.bootstrap, topic, msgs, t0, msg_rate)
    worker.wait_for("latency", lambda: worker.processed(READINGS) >= before + len(msgs), 300)
    t0_ms = int(t0 * 1000)
    row = worker.query(
        "SELECT count(), quantileExact(0.5)(lat), quantileExact(0.99)(lat), max(lat) FROM ("
        "SELECT toUnixTimestamp64Milli(ingested_at) - toUnixTimestamp64Milli(ts) AS lat FROM readings_store "
        f"WHERE src_topic = '{topic}' AND ts >= fromUnixTimestamp64Milli(toInt64({t0_ms}), 'UTC'))"
    )[0]
    # alert transitions published during the phase: resuming after the 10-min catch-up hole, every
    # device raises a gap and clears it a few readings later (an alert storm the worker must absorb)
    storm = worker.query(
        "SELECT concat(rule, ' ', state), count() FROM alerts_store "
        f"WHERE published_at >= fromUnixTimestamp64Milli(toInt64({t0_ms}), 'UTC') GROUP BY 1 ORDER BY 1"
    )
    return {
        "alert_transitions": {str(k): int(n) for k, n in storm},
        "offered_readings_per_s": readings_per_s,
        "offered_messages_per_s": msg_rate,
        "seconds": cfg.latency_seconds,
        "messages": len(msgs),
        "rows": int(row[0]),
        "p50_ms": float(row[1]),
        "p99_ms": float(row[2]),
        "max_ms": float(row[3]),
        "producer_max_lag_ms": round(worst_lag * 1000, 1),
    }


def run_naive(bench: Bench, topic: str, expect: int, batch_size: int) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    result = bench.tmp / f"naive-{tag}.json"
    log_path = bench.tmp / f"naive-{tag}.log"
    args = [
        sys.executable, "-m", "bench.references", "naive", "--bootstrap", bench.bootstrap, "--topic", topic,
        "--out-topic", f"{topic}.naive-out-{tag}", "--group", f"bench-naive-{tag}",
        "--partitions", str(bench.cfg.partitions), "--expect", str(expect),
        "--max-seconds", str(bench.cfg.naive_seconds), "--result", str(result),
    ]  # fmt: skip
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parent.parent)
        try:
            deadline = time.monotonic() + bench.cfg.naive_seconds + 120
            while not result.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = log_path.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"naive agent failed or timed out:\n{tail}")
                time.sleep(0.2)
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    out = json.loads(result.read_text())
    out["values_per_s"] = out["readings_per_s"] * W.VALUES_PER_READING
    out["time_limited"] = out["messages"] < expect
    return out


def run_ceiling(bench: Bench, topic: str, batch_size: int) -> dict[str, Any]:
    out = aiokafka_ceiling(bench.bootstrap, topic)
    out["readings_per_s"] = out["messages_per_s"] * batch_size
    out["values_per_s"] = out["readings_per_s"] * W.VALUES_PER_READING
    return out


def run_shape(bench: Bench, shape: W.Shape) -> dict[str, Any]:
    """Throughput and latency of the real worker, then both references on the same topic."""
    cfg = bench.cfg
    polls = cfg.polls(shape)
    dep = Deployment(bench, shape.name)
    dep.register(cfg.devices)
    worker = dep.worker()
    t = time.perf_counter()
    worker.start()
    _wait_registry(worker, cfg.devices)
    _log(f"{shape.name}: worker ready with {cfg.devices:,} devices in {time.perf_counter() - t:.1f}s")
    try:
        tp = _throughput(bench, dep, worker, shape, polls)
        _log(f"{shape.name}: {tp['readings_per_s']:,.0f} readings/s end to end")
        lat = _latency(bench, dep, worker, shape, polls, tp["readings_per_s"] / 2, tp["encode_readings_per_s"])
        _log(
            f"{shape.name}: p50 {lat['p50_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms; alert transitions meanwhile: "
            f"{lat['alert_transitions'] or 'none'}"
        )
        peak = worker.peak_rss_mb()
        deadletters = int(worker.scalar("SELECT count() FROM deadletter_store"))
    finally:
        worker.stop()
    topic = dep.topic(READINGS)
    _log(f"{shape.name}: aiokafka ceiling")
    ceiling = run_ceiling(bench, topic, shape.batch_size)
    _log(f"{shape.name}: naive Faust agent")
    naive = run_naive(bench, topic, tp["messages"], shape.batch_size)
    return {
        "batch_size": shape.batch_size,
        "throughput": tp,
        "latency": lat,
        "peak_rss_mb": peak,
        "deadletters": deadletters,
        "ceiling": ceiling,
        "naive": naive,
        "ratio_pipeline_to_ceiling": tp["readings_per_s"] / ceiling["readings_per_s"],
        "ratio_pipeline_to_naive": tp["readings_per_s"] / naive["readings_per_s"],
    }


def run_rss(bench: Bench) -> dict[str, Any]:
    """Peak RSS of one worker holding ``rss_devices`` devices of state (registry + duplicate memory)."""
    cfg = bench.cfg
    dep = Deployment(bench, "rss")
    dep.register(cfg.rss_devices)
    worker = dep.worker()
    worker.start()
    try:
        _wait_registry(worker, cfg.rss_devices)
        base = history_base(cfg.rss_polls)
        msgs = W.encode_polls(
            W.BATCHES, cfg.rss_devices, range(cfg.rss_polls), lambda r, _m: base + r * W.POLL_MS, bench.writer
        )
        _log(f"rss: {cfg.rss_devices:,} devices, {len(msgs):,} batches")
        before = worker.processed(READINGS)
        first, _ = W.produce_all(bench.bootstrap, dep.topic(READINGS), msgs)
        completed = True
        try:  # time-boxed, so that the whole run stays within its budget
            done = worker.wait_for("rss", lambda: worker.processed(READINGS) >= before + len(msgs), cfg.rss_seconds)
        except TimeoutError:
            completed, done = False, time.time()
            _log(f"rss: not all processed within {cfg.rss_seconds:.0f}s; peak RSS so far is reported")
        processed = worker.processed(READINGS) - before
        readings = processed * W.BATCHES.batch_size
        return {
            "devices": cfg.rss_devices,
            "registry_subjects": worker.status()["registry_subjects"],
            "messages": len(msgs),
            "messages_processed": processed,
            "completed": completed,
            "readings": readings,
            "readings_per_s": readings / (done - first),
            "peak_rss_mb": worker.peak_rss_mb(),
            "rss_after_mb": worker.rss_mb(),
        }
    finally:
        worker.stop()


def run_scaling(bench: Bench, single: dict[str, Any] | None) -> dict[str, Any]:
    """Two workers, one consumer group, 4 partitions, each with its own chDB directory."""
    cfg = bench.cfg
    dep = Deployment(bench, "scaling")
    dep.register(cfg.devices)
    workers = [dep.worker(0), dep.worker(1)]
    try:
        for w in workers:  # both at once: one group join instead of two
            w.start(wait=False)
        for w in workers:
            w.wait_ready(180)
        topic = dep.topic(READINGS)

        def balanced() -> bool:
            parts = []
            for w in workers:
                try:
                    s = w.status()
                except (OSError, RuntimeError):
                    return False
                if not s.get("ready"):
                    return False
                parts.append({p for p in s["assignment"] if p.startswith(topic + "[")})
            return all(parts) and not (parts[0] & parts[1]) and len(parts[0] | parts[1]) == cfg.partitions

        t = time.perf_counter()
        workers[0].wait_for("two-worker group", balanced, 180, interval=0.3)
        try:  # each worker recovers the whole registry (a global table) from its changelog
            workers[0].wait_for(
                "registry on both workers",
                lambda: all(w.status().get("registry_subjects", 0) >= cfg.devices for w in workers),
                30,
                interval=0.3,
            )
        except TimeoutError:
            pass  # reported below: readings of devices a worker does not know are dead-lettered
        registry = [w.status().get("registry_subjects", 0) for w in workers]
        _log(f"scaling: two workers balanced in {time.perf_counter() - t:.1f}s, registry {registry}")
        base = history_base(cfg.scaling_polls)
        msgs = W.encode_polls(
            W.BATCHES, cfg.devices, range(cfg.scaling_polls), lambda r, _m: base + r * W.POLL_MS, bench.writer
        )
        before = [w.processed(READINGS) for w in workers]
        cpu0 = [w.cpu_seconds() for w in workers]
        bcpu0 = bench.broker_cpu()
        first, _ = W.produce_all(bench.bootstrap, topic, msgs)
        expected = sum(before) + len(msgs)
        done = workers[0].wait_for("scaling", lambda: sum(w.processed(READINGS) for w in workers) >= expected, 600)
        seconds = done - first
        cpu = [(w.cpu_seconds() - c) / seconds for w, c in zip(workers, cpu0, strict=True)]
        readings = cfg.devices * cfg.scaling_polls
        shares = [(w.processed(READINGS) - b) / len(msgs) for w, b in zip(workers, before, strict=True)]
        rows = [int(w.scalar(f"SELECT count() FROM readings_store WHERE src_topic = '{topic}'")) for w in workers]
        out = {
            "workers": 2,
            "partitions": cfg.partitions,
            "shape": "batches",
            "readings": readings,
            "e2e_seconds": round(seconds, 3),
            "readings_per_s": readings / seconds,
            "values_per_s": readings * W.VALUES_PER_READING / seconds,
            "message_share": shares,
            "rows_per_worker": rows,
            "worker_cpu_cores": cpu,
            "broker_cpu_cores": (bench.broker_cpu() - bcpu0) / seconds,
            "peak_rss_mb": [w.peak_rss_mb() for w in workers],
            "registry_subjects": registry,
            "deadletters": [int(w.scalar("SELECT count() FROM deadletter_store")) for w in workers],
            "note": "chDB allows one process per data directory: each worker writes its own chDB path "
            "(with a ClickHouse server both would write one database)",
        }
        if single:
            out["speedup_vs_one_worker"] = out["readings_per_s"] / single["throughput"]["readings_per_s"]
        return out
    finally:
        for w in workers:
            w.stop()


def run_all(cfg: Config, *, progress: Callable[[str], None] = _log) -> dict[str, Any]:
    started = time.time()
    with (
        tempfile.TemporaryDirectory(prefix="telemetry-bench-") as tmp,
        EmbeddedBroker(log_path=Path(tmp) / "broker.log") as broker,
    ):
        bench = Bench(cfg, broker, Path(tmp))
        results: dict[str, Any] = {"config": asdict(cfg)}
        for shape in (W.SINGLES, W.BATCHES):
            results[shape.name] = run_shape(bench, shape)
        results["rss_100k"] = run_rss(bench)
        if cfg.scaling:
            results["scaling"] = run_scaling(bench, results["batches"])
    results["duration_seconds"] = round(time.time() - started, 1)
    return results
