"""Open ClickHouse (chDB in-process or an HTTP(S) server) through clickhouse-connect.

:class:`Database` wraps one client with the database name the pipeline uses
and converts driver errors into :class:`~pipeline.errors.StorageError`. It is
not thread-safe by itself: the sink serialises writes with its own lock.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import clickhouse_connect
import pyarrow as pa
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from pipeline.errors import StorageError
from pipeline.settings import ClickHouseTarget

_CODE = re.compile(r"Code:\s*(\d+)")
# Errors worth retrying: network, too many parts, memory limit, timeout, server shutting down.
_TRANSIENT_CODES = {159, 164, 202, 209, 210, 241, 252, 394, 425}


def _storage_error(exc: Exception, what: str) -> StorageError:
    text = str(exc)
    m = _CODE.search(text)
    code = int(m.group(1)) if m else None
    transient = code is None or code in _TRANSIENT_CODES
    return StorageError(f"{what}: {text.splitlines()[0][:500]}", code=code, retry_after=1.0 if transient else None)


@dataclass
class Database:
    client: Client
    name: str
    target: ClickHouseTarget
    # one statement at a time on the shared client (chDB has one engine per process)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def table(self, name: str) -> str:
        return f"{self.name}.{name}"

    def command(self, sql: str, settings: dict[str, Any] | None = None) -> Any:
        try:
            with self.lock:
                return self.client.command(sql, settings=settings)
        except (ClickHouseError, OSError) as exc:
            raise _storage_error(exc, "ClickHouse command failed") from exc

    def query_rows(
        self, sql: str, parameters: dict[str, Any] | None = None, settings: dict[str, Any] | None = None
    ) -> tuple[list[str], list[Sequence[Any]]]:
        try:
            with self.lock:
                result = self.client.query(sql, parameters=parameters, settings=settings)
        except (ClickHouseError, OSError) as exc:
            raise _storage_error(exc, "ClickHouse query failed") from exc
        return list(result.column_names), list(result.result_rows)

    def scalar(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        _, rows = self.query_rows(sql, parameters)
        return rows[0][0] if rows else None

    def query_arrow(self, sql: str, parameters: dict[str, Any] | None = None) -> pa.Table:
        try:
            with self.lock:
                return self.client.query_arrow(sql, parameters=parameters)
        except (ClickHouseError, OSError) as exc:
            raise _storage_error(exc, "ClickHouse query failed") from exc

    def insert_arrow(self, table: str, data: pa.Table, settings: dict[str, Any] | None = None) -> None:
        try:
            with self.lock:
                self.client.insert_arrow(self.table(table), data, settings=settings)
        except (ClickHouseError, OSError) as exc:
            raise _storage_error(exc, f"insert into {table} failed") from exc

    def close(self) -> None:
        self.client.close()

    def reader(self) -> Database:
        """A second connection with its own lock, for reads that must not queue behind this one's inserts.

        chDB hosts one engine per process but allows several handles to it, and statements on
        different handles run concurrently (a read sees the parts committed when it starts); a
        server gets a second HTTP client. Falls back to this connection if no second one opens.
        """
        try:
            return connect(self.target, create_database=False)
        except StorageError:
            return self


def connect(target: ClickHouseTarget, *, create_database: bool = True) -> Database:
    """Connect; raise StorageError with a clear message (e.g. a chDB path locked by a running worker)."""
    try:
        if target.embedded:
            assert target.path is not None
            target.path.mkdir(parents=True, exist_ok=True)
            client = clickhouse_connect.get_client(dsn=f"chdb://{target.path}")
        else:
            client = clickhouse_connect.get_client(
                host=target.host,
                port=target.port,
                username=target.username,
                password=target.password,
                secure=target.scheme == "https",
                database="default",
            )
    except Exception as exc:
        text = str(exc)
        if "Cannot lock file" in text or "already running" in text:
            raise StorageError(
                f"the chDB data directory {target.path} is in use by another process (a running worker "
                "or demo); query through the worker instead, or stop it first",
                code=76,
            ) from exc
        raise StorageError(f"cannot connect to ClickHouse at {target.redacted()}: {text[:300]}") from exc
    db = Database(client=client, name=target.database, target=target)
    if create_database:
        db.command(f"CREATE DATABASE IF NOT EXISTS {target.database}")
    return db
