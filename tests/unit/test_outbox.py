"""The outbox's bookkeeping: what flush vouches for, and re-sending after a delivery error.

The producer here is a stand-in with librdkafka's contract (produce queues, flush delivers what
was queued when it started and reports what is left); the topics themselves are exercised
against the real broker by the dead-letter and alert integration tests.
"""

from __future__ import annotations

import asyncio
import threading
import time

from confluent_kafka import KafkaError

from pipeline.sinks.outbox import Outbox


class QueueProducer:
    def __init__(self, fail_first: int = 0) -> None:
        self.queued: list[tuple[bytes, object]] = []
        self.delivered: list[bytes] = []
        self.fail = fail_first
        self.lock = threading.Lock()

    def produce(self, topic: str, *, value: bytes, key: bytes | None, on_delivery, **kw) -> None:
        with self.lock:
            self.queued.append((value, on_delivery))

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        with self.lock:
            batch, self.queued = self.queued, []
        time.sleep(0.05)  # in flight: the event loop runs meanwhile
        for value, on_delivery in batch:
            if self.fail:
                self.fail -= 1
                on_delivery(KafkaError(KafkaError._MSG_TIMED_OUT), None)
            else:
                self.delivered.append(value)
                on_delivery(None, None)
        return 0  # what was sent during the flush is not waited for, nor reported


def test_a_message_sent_while_another_batch_flushes_is_flushed_by_its_own_batch() -> None:
    producer = QueueProducer()
    outbox = Outbox(producer, "t", "test")

    async def run() -> tuple[int, int]:
        outbox.send(b"k", b"a1")
        outbox.send(b"k", b"a2")
        first = asyncio.create_task(outbox.flush())
        await asyncio.sleep(0.01)  # the first flush is in flight
        outbox.send(b"k", b"b1")
        done_a = await first
        done_b = await outbox.flush()
        assert b"b1" in producer.delivered  # acknowledged before the second batch's flush returned
        return done_a, done_b

    done_a, done_b = asyncio.run(run())
    assert done_a + done_b == 3 and len(outbox) == 0  # each message counted once


def test_a_delivery_error_resends_until_everything_is_acknowledged() -> None:
    producer = QueueProducer(fail_first=1)
    outbox = Outbox(producer, "t", "test")
    outbox.send(b"k", b"x", [("h", b"1")], partition=2)
    outbox.send(b"k", b"y")
    assert asyncio.run(outbox.flush(max_backoff=0.01)) == 2
    assert sorted(producer.delivered) == [b"x", b"y", b"y"]  # at least once: y went twice
    assert len(outbox) == 0
