"""The ClickHouse sink: Arrow tables → ``insert_arrow``, chunked to the configured batch size."""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa

from pipeline.errors import StorageError
from pipeline.metrics import Metrics
from pipeline.sinks.base import BatchingSink
from pipeline.storage.client import Database
from pipeline.storage.client import _storage_error as storage_error

log = logging.getLogger(__name__)

# readings_store: optimize_on_insert=0. A ReplacingMergeTree insert would otherwise collapse
# equal keys inside each block before writing (about half the insert time). A readings batch
# has no equal keys (the duplicate filter dropped them), and reads go through FINAL (the
# `readings` view), as they must for duplicates across batches anyway: results are the same.
INSERT_SETTINGS: dict[str, dict[str, int]] = {"readings_store": {"optimize_on_insert": 0}}
# chDB only: these tables are inserted straight from the Arrow table through chDB's Python() table
# function on a second handle of the same in-process engine (clickhouse-connect's insert_arrow
# serialises the table to Arrow IPC and writes it to a temporary file for INSERT ... FROM INFILE:
# a third of the insert's CPU). Same columns, same settings, same lock.
DIRECT_ARROW = frozenset({"readings_store"})


class ClickHouseSink(BatchingSink):
    def __init__(
        self, db: Database, *, max_rows: int, metrics: Metrics | None = None, max_backoff: float = 30.0
    ) -> None:
        super().__init__(max_backoff=max_backoff)
        self._db = db
        self._max_rows = max_rows
        self._metrics = metrics
        self._direct: Any = None  # a chDB connection for DIRECT_ARROW tables, opened on first use
        self._direct_ok = db.target.embedded and db.target.path is not None

    def write(self, destination: str, table: pa.Table) -> None:
        settings = INSERT_SETTINGS.get(destination)
        direct = destination in DIRECT_ARROW and self._direct_connection()
        for start in range(0, table.num_rows, self._max_rows):
            chunk = table.slice(start, self._max_rows)
            if direct:
                self._insert_direct(destination, chunk, settings)
            else:
                self._db.insert_arrow(destination, chunk, settings=settings)

    def _direct_connection(self) -> bool:
        if self._direct is None and self._direct_ok:
            try:
                import chdb

                with self._db.lock:
                    self._direct = chdb.connect(str(self._db.target.path))
            except Exception as exc:  # no second handle: insert_arrow it is
                log.warning("no direct chDB connection (%s); inserting through clickhouse-connect", exc)
                self._direct_ok = False
        return self._direct is not None

    def _insert_direct(self, destination: str, table: pa.Table, settings: dict[str, int] | None) -> None:
        cols = ", ".join(f"`{name}`" for name in table.column_names)
        clause = (" SETTINGS " + ", ".join(f"{k}={v}" for k, v in settings.items())) if settings else ""
        sql = f"INSERT INTO {self._db.table(destination)} ({cols}) SELECT {cols} FROM Python(__sink_batch__){clause}"
        __sink_batch__ = table  # noqa: F841 - chDB's Python() table function looks it up in this frame
        try:
            with self._db.lock:
                self._direct.query(sql)
        except Exception as exc:
            raise storage_error(exc, f"insert into {destination} failed") from exc

    def on_written(self, destination: str, rows: int, seconds: float) -> None:
        if self._metrics is not None:
            self._metrics.rows_written.labels(destination).inc(rows)
            self._metrics.sink_latency.labels(destination).observe(seconds)

    def on_retry(self, destination: str, exc: StorageError) -> None:
        if self._metrics is not None:
            self._metrics.sink_retries.labels(destination).inc()
