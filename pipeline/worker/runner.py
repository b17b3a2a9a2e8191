"""Run one consumed batch through a processor and its sinks without ever crashing the agent.

Order of effects: dead letters are acknowledged by the broker, then every row
(including the dead-letter summary) is in ClickHouse; only then does the agent
acknowledge the Kafka messages, so their offsets can be committed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import pyarrow as pa

from pipeline.envelope import RawMessage, Reason, Rejected
from pipeline.errors import PROCESSING_FAILURES, StorageError
from pipeline.metrics import Metrics
from pipeline.sinks import ClickHouseSink, DeadLetterSink
from pipeline.sinks.alerts import AlertPublisher, transitions_of
from pipeline.worker.processors import BatchResult

log = logging.getLogger(__name__)

Processor = Callable[[Sequence[RawMessage], int], BatchResult]


@dataclass(frozen=True, slots=True)
class Prepared:
    """A processed batch not yet persisted (see :meth:`BatchRunner.prepare`)."""

    messages: Sequence[RawMessage]
    result: BatchResult
    started: float


class BatchRunner:
    def __init__(
        self,
        name: str,
        processor: Processor,
        sink: ClickHouseSink,
        deadletters: DeadLetterSink,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        alerts: AlertPublisher | None = None,
        on_durable: Callable[[], Awaitable[None] | None] | None = None,
    ) -> None:
        self.name = name
        self._alerts = alerts  # publishes a batch's alerts_store rows on the alerts topic before the ack
        self._on_durable = on_durable  # e.g. persist alert episodes to their Faust table
        self._process = processor
        self._sink = sink
        self._dl = deadletters
        self._clock = clock
        self._consumed = metrics.consumed.labels(name)
        self._accepted = metrics.accepted.labels(name)
        self._duplicates = metrics.duplicates.labels(name)
        self._latency = metrics.batch_latency.labels(name)
        self.processed_messages = 0

    def _run_processor(self, messages: Sequence[RawMessage]) -> BatchResult:
        now_ms = int(self._clock() * 1000)
        try:
            return self._process(messages, now_ms)
        except PROCESSING_FAILURES:
            log.exception(
                "batch of %d %s messages failed; isolating the offending message(s)", len(messages), self.name
            )
        merged = BatchResult()
        for msg in messages:  # one at a time, so one poison message cannot hold back the others
            try:
                one = self._process([msg], now_ms)
            except PROCESSING_FAILURES as exc:  # a bug: keep the message on the dead-letter topic for replay
                log.exception("message %s[%d]@%d failed", msg.topic, msg.partition, msg.offset)
                merged.rejects.append(Rejected(Reason.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"[:500], msg))
                continue
            for dest, table in one.tables.items():
                merged.tables[dest] = pa.concat_tables([merged.tables[dest], table]) if dest in merged.tables else table
            merged.rejects.extend(one.rejects)
            merged.accepted += one.accepted
            merged.duplicates += one.duplicates
        return merged

    async def run(self, messages: Sequence[RawMessage]) -> None:
        """Process and persist one batch. Returns only when it is durable (or dead-lettered)."""
        if not messages:
            return
        await self.persist(self.prepare(messages))

    def prepare(self, messages: Sequence[RawMessage]) -> Prepared:
        """The CPU half of :meth:`run`: decode, validate, tag. Touches no sink."""
        started = time.perf_counter()
        return Prepared(messages, self._run_processor(messages), started)

    async def persist(self, prepared: Prepared) -> None:
        """The I/O half of :meth:`run`: dead letters acknowledged, then rows in ClickHouse.

        Callers acknowledge the batch's Kafka messages only after this returned.
        """
        messages, result, started = prepared.messages, prepared.result, prepared.started
        if not messages:
            return
        topic = messages[0].topic
        for dest, table in result.tables.items():
            self._sink.add(dest, topic, -1, table)
        self._dl.add(result.rejects)
        await self._dl.flush()
        alerts = result.tables.get("alerts_store")
        if self._alerts is not None and alerts is not None and alerts.num_rows:
            self._alerts.add(transitions_of(alerts))
            await self._alerts.flush()
        try:
            await self._sink.flush()
        except StorageError as exc:  # permanent refusal (e.g. a schema mismatch): keep the bytes, move on
            log.error("ClickHouse refused a batch permanently (%s); dead-lettering its %d messages", exc, len(messages))
            self._dl.add(Rejected(Reason.SINK_REJECTED, str(exc)[:500], m) for m in messages)
            await self._dl.flush()
            await self._sink.flush()
        if self._on_durable is not None and (done := self._on_durable()) is not None:
            await done
        self.processed_messages += len(messages)
        self._consumed.inc(len(messages))
        self._accepted.inc(result.accepted)
        if result.duplicates:
            self._duplicates.inc(result.duplicates)
        self._latency.observe(time.perf_counter() - started)
