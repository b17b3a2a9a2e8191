"""The dead-letter sink: rejected records → the ``deadletter`` topic and the ``deadletter_store`` table.

A dead-letter message keeps the original key and value bytes (or, for one reading
of a gateway batch, that reading alone re-encoded as JSON) and the original headers,
plus ``dl.*`` headers: reason, detail, source topic/partition/offset, record index.
Replaying a dead-letter message to its source topic re-processes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping

import pyarrow as pa
from confluent_kafka import KafkaError, Producer

from pipeline.envelope import Rejected
from pipeline.metrics import Metrics
from pipeline.sinks.base import BatchingSink

log = logging.getLogger(__name__)

DEADLETTER_SCHEMA = pa.schema(
    [
        ("tenant_id", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("src_topic", pa.string()),
        ("src_partition", pa.uint16()),
        ("src_offset", pa.uint64()),
        ("record_index", pa.int32()),
        ("message_key", pa.string()),
        ("value_bytes", pa.uint32()),
        ("failed_at", pa.timestamp("ms", tz="UTC")),
    ]
)


def deadletter_headers(r: Rejected, failed_at_ms: int) -> list[tuple[str, bytes]]:
    own = [
        ("dl.reason", r.reason.value.encode()),
        ("dl.detail", r.detail.encode("utf-8", "replace")[:1000]),
        ("dl.source.topic", r.original.topic.encode()),
        ("dl.source.partition", str(r.original.partition).encode()),
        ("dl.source.offset", str(r.original.offset).encode()),
        ("dl.record_index", str(r.record_index).encode()),
        ("dl.failed_at", str(failed_at_ms).encode()),
    ]
    if r.tenant_id:
        own.append(("dl.tenant", r.tenant_id.encode()))
    own.extend((k, v.encode()) for k, v in r.extra)
    kept = [(k, v) for k, v in r.original.headers if not k.startswith("dl.")]
    return kept + own


class DeadLetterSink:
    """Produce dead letters and record them in ClickHouse; ``flush`` waits for both."""

    def __init__(
        self, producer: Producer, topic: str, table_sink: BatchingSink, *, metrics: Metrics | None = None
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._table_sink = table_sink
        self._metrics = metrics
        self._errors: list[KafkaError] = []
        # messages of the current batch, kept until the broker acknowledged all of them
        self._outbox: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = []

    @classmethod
    def create(
        cls,
        bootstrap: str,
        topic: str,
        table_sink: BatchingSink,
        *,
        client_config: Mapping[str, str] | None = None,
        metrics: Metrics | None = None,
    ) -> DeadLetterSink:
        producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "linger.ms": 20,
                "acks": "all",
                "message.max.bytes": 16 * 1024 * 1024,
                "partitioner": "murmur2_random",
                **(client_config or {}),
            }
        )
        return cls(producer, topic, table_sink, metrics=metrics)

    def _on_delivery(self, err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            self._errors.append(err)

    def add(self, rejects: Iterable[Rejected]) -> int:
        now_ms = int(time.time() * 1000)
        cols: dict[str, list] = {f.name: [] for f in DEADLETTER_SCHEMA}
        counts: dict[tuple[str, str], int] = {}
        for r in rejects:
            value = r.payload if r.payload is not None else r.original.value
            message = (r.original.key, value, deadletter_headers(r, now_ms))
            self._outbox.append(message)
            self._produce(*message)
            cols["tenant_id"].append(r.tenant_id)
            cols["reason"].append(r.reason.value)
            cols["detail"].append(r.detail[:1000])
            cols["src_topic"].append(r.original.topic)
            cols["src_partition"].append(r.original.partition)
            cols["src_offset"].append(r.original.offset)
            cols["record_index"].append(r.record_index)
            cols["message_key"].append((r.original.key or b"").decode("utf-8", "replace")[:256])
            cols["value_bytes"].append(min(len(value or b""), 2**32 - 1))
            cols["failed_at"].append(now_ms)
            k = (r.original.topic, r.reason.value)
            counts[k] = counts.get(k, 0) + 1
        n = len(cols["reason"])
        if n:
            self._table_sink.add("deadletter_store", self._topic, -1, pa.table(cols, schema=DEADLETTER_SCHEMA))
            if self._metrics is not None:
                for (topic, reason), c in counts.items():
                    self._metrics.rejected.labels(topic, reason).inc(c)
        return n

    def _produce(self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        while True:
            try:
                self._producer.produce(
                    self._topic, value=value, key=key, headers=headers, on_delivery=self._on_delivery
                )
                return
            except BufferError:
                self._producer.poll(0.1)  # local queue full: wait for deliveries (back-pressure)

    async def flush(self, *, max_backoff: float = 30.0) -> None:
        """Wait until every dead letter of this batch is acknowledged; re-send on failure.

        Never drops: a delivery error re-produces the whole outbox (the topic is
        at-least-once; the ClickHouse summary de-duplicates by source position).
        """
        delay = 0.5
        while self._outbox:
            remaining = await asyncio.to_thread(self._producer.flush, 30.0)
            if not remaining and not self._errors:
                self._outbox.clear()
                return
            errors, self._errors = self._errors, []
            log.warning(
                "dead-letter delivery incomplete (%d pending, %d errors: %s); re-sending in %.1fs",
                remaining,
                len(errors),
                errors[:1],
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_backoff)
            if remaining:
                await asyncio.to_thread(self._producer.flush, 30.0)
            self._errors.clear()
            for message in self._outbox:
                self._produce(*message)
