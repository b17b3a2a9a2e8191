"""``Outbox``: messages produced through librdkafka and kept until the broker acknowledged every one.

The dead letters, the alerts and the alert state all need the same guarantee before the
worker acknowledges its input: each message of the batch is on the broker. ``send``
produces at once (waiting for deliveries when the local queue is full); ``flush`` returns
only when all sent messages are acknowledged, re-sending the whole outbox after a delivery
error with exponential back-off (the topics are at-least-once; consumers de-duplicate).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from confluent_kafka import KafkaError, Producer

log = logging.getLogger(__name__)

__all__ = ["Outbox"]

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class _Message:
    key: bytes | None
    value: bytes | None
    headers: Headers | None
    partition: int | None


class Outbox:
    """Messages for one topic (``what`` names them in warnings)."""

    def __init__(self, producer: Producer, topic: str, what: str) -> None:
        self.producer = producer
        self.topic = topic
        self.what = what
        self._errors: list[KafkaError] = []
        self._pending: dict[int, _Message] = {}  # by send number, oldest first
        self._sent = 0

    def __len__(self) -> int:
        return len(self._pending)

    def send(self, key: bytes | None, value: bytes | None, headers: Headers | None = None,
             partition: int | None = None) -> None:  # fmt: skip
        message = _Message(key, value, headers, partition)
        self._pending[self._sent] = message
        self._sent += 1
        self._produce(message)

    def _on_delivery(self, err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            self._errors.append(err)

    def _produce(self, m: _Message) -> None:
        extra: dict[str, object] = {} if m.partition is None else {"partition": m.partition}
        if m.headers is not None:
            extra["headers"] = m.headers
        while True:
            try:
                self.producer.produce(self.topic, value=m.value, key=m.key, on_delivery=self._on_delivery,
                                      **extra)  # fmt: skip
                return
            except BufferError:
                self.producer.poll(0.1)  # local queue full: wait for deliveries (back-pressure)

    async def flush(self, *, max_backoff: float = 30.0) -> int:
        """Wait until every sent message is acknowledged; returns how many that was."""
        delay, done = 0.5, 0
        while self._pending:
            # librdkafka's flush vouches for the messages sent before it starts: another batch on the
            # same outbox may send more meanwhile, or flush concurrently and settle some of these first
            upto = self._sent
            remaining = await asyncio.to_thread(self.producer.flush, 30.0)
            if not remaining and not self._errors:
                for seq in [s for s in self._pending if s < upto]:
                    del self._pending[seq]
                    done += 1
                continue
            errors, self._errors = self._errors, []
            log.warning("%s delivery incomplete (%d pending, %d errors: %s); re-sending in %.1fs",
                        self.what, remaining, len(errors), errors[:1], delay)  # fmt: skip
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_backoff)
            if remaining:  # let the stragglers land before re-sending, so that fewer arrive twice
                await asyncio.to_thread(self.producer.flush, 30.0)
            self._errors.clear()
            for message in list(self._pending.values()):
                self._produce(message)
        return done
