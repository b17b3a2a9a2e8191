"""A ``telemetry worker`` child process and its HTTP endpoints, for the demo, tests and bench.

chDB lets one process open a data directory, so whoever starts a worker reads its
ClickHouse through the worker's ``/query`` endpoint and follows it on ``/status``.
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
from pathlib import Path
from typing import IO, Any

from pipeline.errors import TelemetryError


class WorkerProcess:
    """Start with :meth:`start`; stop with :meth:`stop` (SIGTERM) or :meth:`kill` (SIGKILL)."""

    def __init__(self, env: dict[str, str], log_path: Path, port: int) -> None:
        self.env = env
        self.log_path = log_path
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, timeout: float = 120.0, *, wait: bool = True) -> WorkerProcess:
        env = {**os.environ, **self.env, "WEB_PORT": str(self.port)}
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "pipeline", "worker"], env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT)  # fmt: skip
        return self.wait_ready(timeout) if wait else self

    def wait_ready(self, timeout: float = 120.0) -> WorkerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if self.status(timeout=2).get("ready"):
                    return self
            except OSError:
                pass
            time.sleep(0.3)
        raise TelemetryError(f"the worker did not become ready within {timeout}s:\n{self.log_tail()}")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive:
            code = self.proc.returncode if self.proc is not None else None
            raise TelemetryError(f"the worker is not running (exit code {code}):\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-n:])

    def get(self, path: str, payload: dict[str, Any] | None = None, timeout: float = 120.0) -> Any:
        """GET (or POST ``payload`` as JSON) and decode the JSON answer, error bodies included."""
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = exc.read()
            try:
                return json.loads(body)
            except ValueError:
                raise TelemetryError(f"{path}: HTTP {exc.code}: {body[:500]!r}") from exc

    def status(self, timeout: float = 5.0) -> dict[str, Any]:
        return self.get("/status", timeout=timeout)

    def query(self, sql: str, *, max_rows: int = 1_000_000) -> tuple[list[str], list[list[Any]]]:
        """Columns and rows of a read-only query; raises if the worker refused it or cut it short."""
        body = self.get("/query", {"sql": sql, "max_rows": max_rows})
        if "error" in body:
            raise TelemetryError(body["error"])
        if body.get("truncated"):
            raise TelemetryError(f"query result longer than {max_rows} rows: {sql}")
        return body["columns"], body["rows"]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)
