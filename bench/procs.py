"""A real ``telemetry worker`` subprocess for the benchmark, plus /proc readings (RSS, CPU time).

The worker is started exactly as in production (``python -m pipeline worker``,
settings from the environment); the bench talks to it only through its HTTP
port (``/status`` for processed counts, ``/query`` for read-only SQL, since
chDB lets one process open a data directory).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.broker.embedded import free_port

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_status_kb(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/PID/status (VmHWM = peak RSS, VmRSS = current RSS)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


@dataclass
class BenchWorker:
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    port: int = field(default_factory=free_port)

    def start(self, timeout: float = 120.0, *, wait: bool = True) -> BenchWorker:
        env = {**os.environ, **self.env, "WEB_PORT": str(self.port)}
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "worker"], env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        self.started_at = time.monotonic()
        return self.wait_ready(timeout) if wait else self

    def wait_ready(self, timeout: float = 120.0) -> BenchWorker:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if self.status().get("ready"):
                    return self
            except (OSError, RuntimeError):  # not listening yet, or the web view not wired yet (HTTP 500)
                pass
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready after {timeout}s:\n{self.log_tail()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = self.proc.returncode if self.proc else None
            raise RuntimeError(f"worker exited ({code}):\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

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
            raise RuntimeError(f"{path}: HTTP {exc.code}: {exc.read()[:500]!r}") from exc

    def status(self) -> dict[str, Any]:
        # generous: a worker busy with a large batch answers late, and that is not a failure
        return self._get("/status", timeout=60)

    def processed(self, agent: str) -> int:
        return int(self.status()["processed"].get(agent, 0))

    def query(self, sql: str) -> list[list[Any]]:
        body = self._get("/query", {"sql": sql})
        if "error" in body:
            raise RuntimeError(body["error"])
        return body["rows"]

    def scalar(self, sql: str) -> Any:
        rows = self.query(sql)
        return rows[0][0] if rows else None

    def peak_rss_mb(self) -> float:
        return proc_status_kb(self.pid, "VmHWM") / 1024

    def rss_mb(self) -> float:
        return proc_status_kb(self.pid, "VmRSS") / 1024

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def wait_for(self, what: str, done: Any, timeout: float, interval: float = 0.05) -> float:
        """Poll ``done()`` until true; return the wall time (``time.time()``) of the poll that saw it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if done():
                    return time.time()
            except OSError:  # a slow answer (timeout): ask again
                pass
            time.sleep(interval)
        raise TimeoutError(f"{what} not done after {timeout}s\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        self._log.close()
