"""Send simulated messages to Kafka with confluent-kafka."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from pipeline.errors import BrokerError
from pipeline.simulate.config import OutMessage

__all__ = ["MAX_MESSAGE_BYTES", "produce"]

MAX_MESSAGE_BYTES = 8 * 1024 * 1024  # room for the oversize fault (> 1 MiB)
_PROGRESS_EVERY = 1000


def produce(
    messages: Iterable[OutMessage],
    *,
    bootstrap: str,
    topic_prefix: str,
    rate: float | None = None,
    progress: Callable[[int], None] | None = None,
    producer_config: dict[str, Any] | None = None,
) -> int:
    """Produce ``messages`` in order to ``topic_prefix + message.topic``; return how many were produced.

    Keys are partitioned with ``murmur2_random`` (the Java client's and aiokafka's
    partitioner), so one key lands on the same partition whoever produced it.
    ``rate`` caps messages per second. ``progress(n)`` is called every 1000
    messages and at the end. Raises :class:`BrokerError` if any delivery failed.
    """
    from confluent_kafka import KafkaException, Producer

    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "partitioner": "murmur2_random",
        "message.max.bytes": MAX_MESSAGE_BYTES,
        "linger.ms": 20,
        "enable.idempotence": False,
        "acks": "all",
    }
    conf.update(producer_config or {})
    errors: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(f"{msg.topic()}: {err}")

    try:
        producer = Producer(conf)
    except KafkaException as exc:
        raise BrokerError(f"cannot create Kafka producer for {bootstrap}: {exc}") from exc
    count, started = 0, time.monotonic()
    for m in messages:
        while True:
            try:
                producer.produce(topic_prefix + m.topic, value=m.value, key=m.key, headers=list(m.headers) or None,
                                 on_delivery=delivered)  # fmt: skip
                break
            except BufferError:
                producer.poll(0.1)
            except KafkaException as exc:
                raise BrokerError(f"producing to {topic_prefix + m.topic} failed: {exc}") from exc
        count += 1
        producer.poll(0)
        if rate:
            ahead = count / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        if progress is not None and count % _PROGRESS_EVERY == 0:
            progress(count)
        if errors:
            break
    remaining = producer.flush(60)
    if remaining:
        errors.append(f"{remaining} message(s) still undelivered after 60 s")
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise BrokerError(f"Kafka delivery failed: {errors[0]}{more}")
    if progress is not None and count % _PROGRESS_EVERY:
        progress(count)
    return count
