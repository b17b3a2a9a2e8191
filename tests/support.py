"""Helpers for integration tests: a real worker process, producing and consuming real topics.

ClickHouse is read through the worker's /query endpoint: chDB lets one process
open a data directory, and the worker is that process.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from pipeline.broker.embedded import free_port
from pipeline.worker.process import WorkerProcess as BaseWorkerProcess


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


class WorkerProcess(BaseWorkerProcess):
    """A worker on a free port with the test-only conveniences."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        super().__init__(env, log_path, free_port())

    def start(self, timeout: float = 90.0, *, wait: bool = True) -> WorkerProcess:
        super().start(timeout, wait=wait)
        return self

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as resp:
            return resp.read().decode()

    def query(self, sql: str, *, max_rows: int = 1_000_000) -> list[list[Any]]:  # type: ignore[override]
        return super().query(sql, max_rows=max_rows)[1]

    def wait_processed(self, expected: dict[str, int], timeout: float = 180.0) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        processed: dict[str, int] = {}
        while time.monotonic() < deadline:
            self.check_alive()
            processed = self.status()["processed"]
            if all(processed.get(k, 0) >= v for k, v in expected.items()):
                return processed
            time.sleep(0.3)
        raise TimeoutError(f"processed {processed}, expected {expected}\n{self.log_tail()}")


def producer(bootstrap: str) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "partitioner": "murmur2_random",
            "linger.ms": 5,
            "message.max.bytes": 16 * 1024 * 1024,
        }
    )


def produce(bootstrap: str, topic: str, items: Iterable[tuple[bytes | None, bytes | None]]) -> int:
    p = producer(bootstrap)
    n = 0
    for key, value in items:
        p.produce(topic, key=key, value=value)
        n += 1
        if n % 10_000 == 0:
            p.poll(0)
    assert p.flush(30) == 0
    return n


def consume_all(bootstrap: str, topic: str, timeout: float = 30.0) -> list[Any]:
    """Every message currently on ``topic`` (all partitions, from the start)."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("reader-"),
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        meta = c.list_topics(topic, timeout=10).topics[topic]
        tps = [TopicPartition(topic, p) for p in meta.partitions]
        ends = {}
        for tp in tps:
            _, high = c.get_watermark_offsets(tp, timeout=10)
            ends[tp.partition] = high
        c.assign([TopicPartition(topic, p, 0) for p in ends])
        out: list[Any] = []
        done = {p for p, h in ends.items() if h == 0}
        deadline = time.monotonic() + timeout
        while len(done) < len(ends) and time.monotonic() < deadline:
            for m in c.consume(1000, timeout=0.5):
                if m.error():
                    continue
                out.append(m)
                if m.offset() + 1 >= ends[m.partition()]:
                    done.add(m.partition())
        return out
    finally:
        c.close()


def header(msg: Any, name: str) -> str | None:
    for k, v in msg.headers() or []:
        if k == name:
            return v.decode()
    return None


def count_reasons(messages: Iterable[Any]) -> dict[str, int]:
    return dict(Counter(header(m, "dl.reason") for m in messages))


def shared_testdata(name: str) -> Any:
    """A JSON test vector from shared/testdata (shared/ sits beside the checkout)."""
    return json.loads((Path(__file__).resolve().parents[2] / "shared" / "testdata" / name).read_text())
