"""The ClickHouse sink: Arrow tables → ``insert_arrow``, chunked to the configured batch size."""

from __future__ import annotations

import pyarrow as pa

from pipeline.errors import StorageError
from pipeline.metrics import Metrics
from pipeline.sinks.base import BatchingSink
from pipeline.storage.client import Database


class ClickHouseSink(BatchingSink):
    def __init__(
        self, db: Database, *, max_rows: int, metrics: Metrics | None = None, max_backoff: float = 30.0
    ) -> None:
        super().__init__(max_backoff=max_backoff)
        self._db = db
        self._max_rows = max_rows
        self._metrics = metrics

    def write(self, destination: str, table: pa.Table) -> None:
        for start in range(0, table.num_rows, self._max_rows):
            self._db.insert_arrow(destination, table.slice(start, self._max_rows))

    def on_written(self, destination: str, rows: int, seconds: float) -> None:
        if self._metrics is not None:
            self._metrics.rows_written.labels(destination).inc(rows)
            self._metrics.sink_latency.labels(destination).observe(seconds)

    def on_retry(self, destination: str, exc: StorageError) -> None:
        if self._metrics is not None:
            self._metrics.sink_retries.labels(destination).inc()
