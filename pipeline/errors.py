"""One root error type for the whole pipeline, with specific subclasses.

Callers catch :class:`TelemetryError` to handle anything the pipeline raises on
purpose; the subclasses carry what a caller needs to react (a retry hint, the
server's error code, the offending input's position).
"""

from __future__ import annotations


class TelemetryError(Exception):
    """Root of every error the pipeline raises deliberately."""


class ConfigError(TelemetryError):
    """Settings, policy or catalogue files are invalid."""


class CodecError(TelemetryError):
    """Bytes could not be decoded into a record.

    ``reason`` is a dead-letter reason code (see :class:`pipeline.envelope.Reason`).
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class BrokerError(TelemetryError):
    """The Kafka broker (embedded or remote) is unavailable or failed to start."""


class StorageError(TelemetryError):
    """ClickHouse rejected a statement or is unreachable.

    ``code`` is the server's numeric error code when known; ``retry_after`` is
    a suggested wait in seconds for transient failures (``None`` = permanent).
    """

    def __init__(self, message: str, *, code: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after


class MigrationError(StorageError):
    """A DDL file failed to apply."""


def _bug_types() -> tuple[type[BaseException], ...]:
    try:  # a Rust panic inside polars surfaces as pyo3's PanicException, a BaseException
        from polars.exceptions import PanicException
    except ImportError:  # pragma: no cover
        return (Exception,)
    return (Exception, PanicException)


# What a stage may raise on a bad batch without taking the worker down: catch these (and only
# these) where one batch or one rule is isolated; KeyboardInterrupt and SystemExit still propagate.
PROCESSING_FAILURES: tuple[type[BaseException], ...] = _bug_types()
