"""Whole fetched batches for the hot topics, taken from Faust's consumer below its per-event machinery.

Faust stays the stream processor: it owns the consumer group (joins, assignment,
rebalances, table recovery), the tables, and offset commits. What it costs is its
per-event path: for every message the fetcher awaits ``wait_first`` (two futures),
the conductor builds an Event and queues it, the Stream iterates it, the agent
acknowledges it. That caps an agent at ~9,000 messages/s on this hardware while
aiokafka fetches ~450,000/s.

:class:`BatchFeed` wraps the consumer's ``_wait_next_records`` (the step that
returns each fetched ``{partition: [records]}`` map to Faust's fetcher) and takes
out the records of the hot topics whole, before Faust turns them into events.
Everything else (registry, tables' changelogs, other agents) flows on as before.
The agent of a hot topic (still a Faust agent, subscribed to its topic, so Faust
assigns its partitions) then:

1. ``take``s the buffered records as one batch (up to ``max_messages`` /
   ``max_bytes``, waiting at most ``within`` seconds for a batch to fill);
2. processes it (CPU: decode, validate, tag) while the previous batch's insert
   runs in a thread (pipelining, one batch deep);
3. acknowledges the batch's offsets in bulk to Faust's commit bookkeeping only
   after the batch is durable (rows in ClickHouse, dead letters acknowledged).

Guarantees kept: a record is acknowledged only after it is durable, so Faust's
commit timer never commits past an unpersisted record. Records fetched in one
consumer generation are never acknowledged in another: after a rebalance Faust
seeks every assigned partition back to its committed offset, so buffered or
in-flight records of the old generation are dropped or left unacknowledged and
simply come again (the sinks are idempotent). Back-pressure: when a topic's
buffer is full its partitions are paused with Faust's own ``on_buffer_full`` and
resumed at half (``on_buffer_drop``), exactly like Faust's stream buffers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from faust.types import TP
from faust.types.tuples import ack_lock

from pipeline.envelope import RawMessage

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Chunk:
    """The records of one partition from one fetch."""

    tp: TP
    records: list[Any]  # aiokafka ConsumerRecord
    size: int
    generation: int


class _TopicBuffer:
    def __init__(self) -> None:
        self.chunks: deque[Chunk] = deque()
        self.messages = 0
        self.bytes = 0
        self.paused: set[TP] = set()
        self.arrived = asyncio.Event()


def to_raw(records: Iterable[Any]) -> list[RawMessage]:
    return [
        RawMessage(r.topic, r.partition, r.offset, r.key, r.value, tuple(r.headers or ()), r.timestamp or 0)
        for r in records
    ]


class BatchFeed:
    """Divert the records of ``topics`` from Faust's per-event path into batches (see module docs)."""

    def __init__(self, app: Any, topics: Iterable[str], *, max_buffer_bytes: int = 32 * 1024 * 1024) -> None:
        self.app = app
        self.topics = frozenset(topics)
        self.max_buffer_bytes = max_buffer_bytes
        self._buffers: dict[str, _TopicBuffer] = {}
        self._installed = False

    def _buffer(self, topic: str) -> _TopicBuffer:
        buf = self._buffers.get(topic)
        if buf is None:
            buf = self._buffers[topic] = _TopicBuffer()
        return buf

    def install(self, *, fetch_max_wait_ms: int | None = None) -> None:
        """Wrap the app's consumer (call once, before the worker starts fetching).

        ``fetch_max_wait_ms`` replaces the 1500 ms that Faust's aiokafka driver hard-codes:
        a broker that holds every fetch for the full wait (the embedded Tansu broker does,
        even with data available) would add that much latency to every record.
        """
        if self._installed:
            return
        consumer = self.app.consumer
        thread = getattr(consumer, "_thread", None)
        create = getattr(thread, "_create_consumer", None)
        if fetch_max_wait_ms is not None and create is not None:

            def _create_consumer(*args: Any, **kwargs: Any) -> Any:
                client = create(*args, **kwargs)
                client._fetch_max_wait_ms = fetch_max_wait_ms  # read by AIOKafkaConsumer.start()
                return client

            thread._create_consumer = _create_consumer
        fetch = consumer._wait_next_records

        async def _wait_next_records(timeout: float) -> tuple[Any, Any]:
            records, active = await fetch(timeout)
            if records:
                await self._divert(consumer, records, active)
            return records, active

        consumer._wait_next_records = _wait_next_records
        self._installed = True

    async def _divert(self, consumer: Any, records: dict[TP, list[Any]], active: set[TP] | None) -> None:
        hot = [tp for tp in records if tp.topic in self.topics]
        if not hot:
            return
        generation = self.app.consumer_generation_id
        flowing = consumer.flow_active
        read_offset = consumer._read_offset
        for tp in hot:
            recs = records.pop(tp)
            # the same rules as Faust's getmany/_drain_messages: no records while the flow is
            # stopped (a rebalance seeks back to committed), none of inactive partitions, none
            # below the read offset (re-fetched after a seek)
            if not flowing or not (active is None or tp in active or tp in consumer._buffered_partitions):
                continue
            r_offset = read_offset[tp]
            if r_offset is not None and recs and recs[0].offset < r_offset:
                recs = [r for r in recs if r.offset >= r_offset]
            if not recs:
                continue
            if r_offset and recs[0].offset - r_offset > 1 and self.app.topics.acks_enabled_for(tp.topic):
                await consumer._add_gap(tp, r_offset + 1, recs[0].offset)  # e.g. compacted away
            read_offset[tp] = recs[-1].offset
            tp = TP(tp.topic, tp.partition)  # aiokafka's TopicPartition: equal, but Faust asserts its own type
            size = sum(len(r.value or b"") for r in recs)
            buf = self._buffer(tp.topic)
            buf.chunks.append(Chunk(tp, recs, size, generation))
            buf.messages += len(recs)
            buf.bytes += size
            if buf.bytes >= self.max_buffer_bytes and tp not in buf.paused:
                buf.paused.add(tp)
                consumer.on_buffer_full(tp)
            buf.arrived.set()

    def _resume(self, buf: _TopicBuffer) -> None:
        if buf.paused and buf.bytes < self.max_buffer_bytes // 2:
            consumer = self.app.consumer
            for tp in buf.paused:
                consumer.on_buffer_drop(tp)
            buf.paused.clear()

    async def take(self, topic: str, *, max_messages: int, max_bytes: int, within: float) -> list[Chunk]:
        """The next batch of ``topic``: waits for a first record, then up to ``within`` s for more.

        Records of an older consumer generation are dropped here (Faust re-fetches them).
        """
        buf = self._buffer(topic)
        out: list[Chunk] = []
        n = size = 0
        deadline: float | None = None
        while True:
            generation = self.app.consumer_generation_id
            while buf.chunks and n < max_messages and size < max_bytes:
                chunk = buf.chunks[0]
                room = max_messages - n
                if len(chunk.records) > room:  # split: the rest stays first in line
                    head, tail = chunk.records[:room], chunk.records[room:]
                    head_size = sum(len(r.value or b"") for r in head)
                    buf.chunks[0] = Chunk(chunk.tp, tail, chunk.size - head_size, chunk.generation)
                    chunk = Chunk(chunk.tp, head, head_size, chunk.generation)
                else:
                    buf.chunks.popleft()
                buf.messages -= len(chunk.records)
                buf.bytes -= chunk.size
                if chunk.generation != generation:
                    continue
                out.append(chunk)
                n += len(chunk.records)
                size += chunk.size
            self._resume(buf)
            if n >= max_messages or size >= max_bytes:
                return out
            now = time.monotonic()
            if out and deadline is None:
                deadline = now + within
            if deadline is not None and now >= deadline:
                return out
            buf.arrived.clear()
            try:
                await asyncio.wait_for(buf.arrived.wait(), None if deadline is None else deadline - now)
            except TimeoutError:
                pass

    def ack(self, chunks: Sequence[Chunk]) -> int:
        """Hand the offsets of durable ``chunks`` to Faust's commit bookkeeping, in bulk.

        The same bookkeeping as ``Consumer.ack`` per message. Chunks of an older
        generation, or of partitions no longer assigned, are skipped: those records
        are fetched again from the committed offset.
        """
        consumer = self.app.consumer
        generation = self.app.consumer_generation_id
        assigned = consumer.assignment()
        acked = 0
        with ack_lock:
            for chunk in chunks:
                tp = chunk.tp
                if chunk.generation != generation or tp not in assigned:
                    continue
                committed = consumer._committed_offset[tp]
                index = consumer._acked_index[tp]
                offsets = [r.offset for r in chunk.records if (committed is None or r.offset >= committed)]
                offsets = [o for o in offsets if o not in index] if index else offsets
                if offsets:
                    index.update(offsets)
                    consumer._acked[tp].extend(offsets)
                    consumer._n_acked += len(offsets)
                    acked += len(offsets)
            waiter = consumer._waiting_for_ack
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        return acked


async def pump(
    feed: BatchFeed,
    topic: str,
    prepare: Callable[[list[RawMessage]], Any],
    persist: Callable[[Any], Awaitable[None]],
    *,
    max_messages: int,
    max_bytes: int,
    within: float,
) -> None:
    """The hot agent's loop: take → prepare (CPU) while the previous batch persists → ack when durable."""
    inflight: asyncio.Future[None] | None = None

    async def persist_then_ack(prepared: Any, chunks: list[Chunk]) -> None:
        await persist(prepared)
        feed.ack(chunks)

    try:
        while True:
            chunks = await feed.take(topic, max_messages=max_messages, max_bytes=max_bytes, within=within)
            if not chunks:
                continue
            messages = to_raw(r for c in chunks for r in c.records)
            # in a thread: the event loop keeps fetching, heartbeating, committing and answering
            # HTTP while a batch is decoded (polars and chDB release the GIL for their heavy parts)
            prepared = await asyncio.to_thread(prepare, messages)
            if inflight is not None:
                await inflight  # batch N durable and acknowledged before batch N+1 starts persisting
            inflight = asyncio.ensure_future(persist_then_ack(prepared, chunks))
    finally:
        if inflight is not None and not inflight.done():
            inflight.cancel()
