"""The dead-letter sink: rejected records → the ``deadletter`` topic and the ``deadletter_store`` table.

A dead-letter message keeps the original key and value bytes (or, for one reading
of a gateway batch, that reading alone re-encoded as JSON) and the original headers,
plus ``dl.*`` headers: reason, detail, source topic/partition/offset, record index.
Replaying a dead-letter message to its source topic re-processes it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import pyarrow as pa
from confluent_kafka import Producer

from pipeline.envelope import Rejected
from pipeline.metrics import Metrics
from pipeline.sinks.base import BatchingSink
from pipeline.sinks.outbox import Outbox

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
        self._topic = topic
        self._table_sink = table_sink
        self._metrics = metrics
        # messages of the current batch, kept until the broker acknowledged all of them
        self._outbox = Outbox(producer, topic, "dead-letter")

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

    def add(self, rejects: Iterable[Rejected]) -> int:
        now_ms = int(time.time() * 1000)
        cols: dict[str, list] = {f.name: [] for f in DEADLETTER_SCHEMA}
        counts: dict[tuple[str, str], int] = {}
        for r in rejects:
            value = r.payload if r.payload is not None else r.original.value
            self._outbox.send(r.original.key, value, deadletter_headers(r, now_ms))
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

    async def flush(self, *, max_backoff: float = 30.0) -> None:
        """Wait until every dead letter of this batch is acknowledged; re-send on failure.

        Never drops: a delivery error re-produces the whole outbox (the topic is
        at-least-once; the ClickHouse summary de-duplicates by source position).
        """
        await self._outbox.flush(max_backoff=max_backoff)
