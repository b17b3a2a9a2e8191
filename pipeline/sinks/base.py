"""A small batching sink: ``add`` rows, ``flush`` writes one batch per destination and partition.

Modelled on quix-streams' ``sinks/base``: the sink keeps one batch per
(destination, topic-partition) so a caller can tell which source positions a
successful flush made durable, and ``write`` is the only method a concrete sink
implements. Offsets must be committed only after ``flush`` returned.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections import defaultdict
from dataclasses import dataclass, field

import pyarrow as pa

from pipeline.errors import StorageError

log = logging.getLogger(__name__)


@dataclass
class SinkBatch:
    destination: str
    topic: str
    partition: int
    tables: list[pa.Table] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(t.num_rows for t in self.tables)

    def to_arrow(self) -> pa.Table:
        return self.tables[0] if len(self.tables) == 1 else pa.concat_tables(self.tables)


class BatchingSink(ABC):
    """Accumulate Arrow tables; ``flush`` writes them with retries (back-pressure, never dropping)."""

    def __init__(self, *, max_backoff: float = 30.0) -> None:
        self._batches: dict[tuple[str, str, int], SinkBatch] = {}
        self._max_backoff = max_backoff
        self._lock = asyncio.Lock()

    def add(self, destination: str, topic: str, partition: int, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        key = (destination, topic, partition)
        batch = self._batches.get(key)
        if batch is None:
            batch = self._batches[key] = SinkBatch(destination, topic, partition)
        batch.tables.append(table)

    @property
    def pending_rows(self) -> int:
        return sum(b.rows for b in self._batches.values())

    async def flush(self) -> dict[str, int]:
        """Write everything pending, one insert per destination; return rows written per destination."""
        async with self._lock:
            batches, self._batches = self._batches, {}
            by_dest: dict[str, list[SinkBatch]] = defaultdict(list)
            for b in batches.values():
                by_dest[b.destination].append(b)
            written: dict[str, int] = {}
            for dest, group in by_dest.items():
                table = pa.concat_tables([b.to_arrow() for b in group], promote_options="none")
                await self._write_with_retry(dest, table)
                written[dest] = table.num_rows
            return written

    async def _write_with_retry(self, destination: str, table: pa.Table) -> None:
        delay = 0.5
        while True:
            started = time.perf_counter()
            try:
                await asyncio.to_thread(self.write, destination, table)
            except StorageError as exc:
                if exc.retry_after is None:
                    raise
                self.on_retry(destination, exc)
                log.warning("write to %s failed, retrying in %.1fs: %s", destination, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff)
                continue
            self.on_written(destination, table.num_rows, time.perf_counter() - started)
            return

    @abstractmethod
    def write(self, destination: str, table: pa.Table) -> None:
        """Write one batch synchronously (called in a worker thread); raise StorageError on failure."""

    def on_written(self, destination: str, rows: int, seconds: float) -> None:  # noqa: B027 - optional hook
        """Hook for metrics."""

    def on_retry(self, destination: str, exc: StorageError) -> None:  # noqa: B027 - optional hook
        """Hook for metrics."""
