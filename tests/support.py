"""Helpers for integration tests: a real worker process, producing and consuming real topics.

ClickHouse is read through the worker's /query endpoint: chDB lets one process
open a data directory, and the worker is that process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from pipeline.broker.embedded import free_port


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@dataclass
class WorkerProcess:
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    port: int = field(default_factory=free_port)

    def start(self, timeout: float = 90.0) -> WorkerProcess:
        env = {**os.environ, **self.env, "WEB_PORT": str(self.port)}
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "worker"], env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if self.status().get("ready"):
                    return self
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"worker not ready after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def _get(self, path: str, data: dict | None = None, timeout: float = 60.0) -> Any:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=json.dumps(data).encode() if data is not None else None,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = exc.read()
            try:
                return json.loads(body)
            except ValueError:
                raise RuntimeError(f"{path}: HTTP {exc.code}: {body[:500]!r}") from exc

    def status(self) -> dict[str, Any]:
        return self._get("/status", timeout=5)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as resp:
            return resp.read().decode()

    def query(self, sql: str) -> list[list[Any]]:
        body = self._get("/query", {"sql": sql, "max_rows": 1_000_000})
        if "error" in body:
            raise RuntimeError(body["error"])
        assert not body["truncated"], f"query result truncated: {sql}"
        return body["rows"]

    def wait_processed(self, expected: dict[str, int], timeout: float = 180.0) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        processed: dict[str, int] = {}
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log_tail()
            processed = self.status()["processed"]
            if all(processed.get(k, 0) >= v for k, v in expected.items()):
                return processed
            time.sleep(0.3)
        raise TimeoutError(f"processed {processed}, expected {expected}\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        self._log.close()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


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
