"""Send dead letters of one reason back to their source topic (``telemetry deadletter replay``).

Typical use: frames dead-lettered as ``unknown_key`` after the meter's key was added
to the key file (docs/dlms.md), or readings dead-lettered as ``unknown_device`` after
the device was registered. Each dead letter is re-produced to the partition it came
from, with its key, value and its non-``dl.*`` headers, in the original order
(source partition, source offset); identical copies (a record dead-lettered again by
an earlier replay) are sent once.

``meter.frames`` has a replay guard: per system title, a frame whose counter is not
above the last accepted one is refused as ``replayed_frame``. A dead-lettered frame
therefore re-processes only if it reaches the worker before any newer frame of its
meter is accepted. For that topic this command

1. refuses to run while the worker's consumer group has members (stop the workers:
   nothing may be accepted while it runs; the embedded Tansu broker does not list
   members, there the command only warns);
2. reads the last accepted counters from the ``dlms_replay`` table's changelog and
   skips (and counts) frames that can no longer pass the guard;
3. when frames of the replayed meters are waiting unconsumed on ``meter.frames``
   (they arrived while the workers were stopped), moves that backlog behind the
   replayed copies: it re-produces the backlog after them and commits the group's
   offset at the first copy, so the worker reads copies first, then the backlog.
   Producers that keep writing during the few seconds this takes may still slip
   a newer frame in between; such a frame ends as ``replayed_frame``, never silently.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from pipeline.errors import BrokerError

__all__ = ["DeadLetter", "ReplayReport", "replay_deadletters"]

FRAMES = "meter.frames"
_EXTRA_HEADERS = ("system_title", "frame_counter")  # added by the frames path, not the producer's
_ACTIVE = ("STABLE", "PREPARING_REBALANCING", "COMPLETING_REBALANCING", "ASSIGNING", "RECONCILING")


@dataclass(frozen=True)
class DeadLetter:
    partition: int  # source partition
    offset: int  # source offset
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]  # the original's own headers (no dl.*, no frame extras)
    system_title: str | None = None
    frame_counter: int | None = None


@dataclass
class ReplayReport:
    topic: str
    reason: str
    found: int = 0  # dead letters of that reason and source topic
    duplicates: int = 0  # identical copies sent once
    superseded: list[DeadLetter] = field(default_factory=list)  # frames the replay guard would refuse
    replayed: int = 0
    waiting: dict[int, int] = field(default_factory=dict)  # partition -> unconsumed newer frames of these meters
    requeued: dict[int, int] = field(default_factory=dict)  # partition -> backlog messages moved behind
    dry_run: bool = False


def _header(headers: Iterable[tuple[str, bytes | None]], name: str) -> str | None:
    for k, v in headers:
        if k == name:
            return (v or b"").decode("utf-8", "replace")
    return None


def _consumer(bootstrap: str, config: Mapping[str, str], group: str | None = None) -> Consumer:
    return Consumer({
        "bootstrap.servers": bootstrap, "group.id": group or f"telemetry-replay-{time.time_ns()}",
        "enable.auto.commit": False, "auto.offset.reset": "earliest", "enable.partition.eof": False, **config,
    })  # fmt: skip


def _read(
    consumer: Consumer, topic: str, ranges: Mapping[int, tuple[int, int | None]], timeout: float = 120.0
) -> list[Any]:
    """Messages of ``topic`` from ``start`` to ``end`` (exclusive) per partition, in partition, offset order.

    ``end`` None reads to the end: until the partition is quiet for a moment after its
    reported high watermark (the embedded broker may report a watermark short of the
    last record of a batch, so it is a lower bound only).
    """
    todo = {p: r for p, r in ranges.items() if r[1] is None or r[1] > r[0]}
    out: dict[int, list[Any]] = {p: [] for p in todo}
    if not todo:
        return []
    marks = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in todo}
    consumer.assign([TopicPartition(topic, p, start) for p, (start, _) in todo.items()])
    deadline, quiet_since = time.monotonic() + timeout, time.monotonic()
    try:
        while todo and time.monotonic() < deadline:
            batch = consumer.consume(1000, timeout=0.3)
            for m in batch:
                p = m.partition()
                if m.error() or p not in todo:
                    continue
                end = todo[p][1]
                if end is None or m.offset() < end:
                    out[p].append(m)
                if end is not None and m.offset() + 1 >= end:
                    del todo[p]
            if batch:
                quiet_since = time.monotonic()
                continue
            if time.monotonic() - quiet_since < 1.0:
                continue
            for p in [p for p, (start, end) in todo.items() if end is None]:  # quiet: open ranges are done
                last = out[p][-1].offset() + 1 if out[p] else todo[p][0]
                if last >= marks[p]:
                    del todo[p]
    finally:
        consumer.unassign()
    if todo:
        raise BrokerError(f"timed out reading {topic} partitions {sorted(todo)}")
    return [m for p in sorted(out) for m in out[p]]


def _partitions(consumer: Consumer, topic: str) -> list[int]:
    meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if meta is None or meta.error is not None:
        raise BrokerError(f"topic {topic} does not exist")
    return sorted(meta.partitions)


def _to_end(consumer: Consumer, topic: str) -> list[Any]:
    return _read(consumer, topic, {p: (0, None) for p in _partitions(consumer, topic)})


def _group_state(admin: AdminClient, group: str) -> tuple[str, int]:
    """(state, number of members) of a consumer group."""
    try:
        [fut] = admin.describe_consumer_groups([group]).values()
        desc = fut.result(timeout=15)
    except KafkaException as exc:
        raise BrokerError(f"cannot describe consumer group {group}: {exc}") from exc
    return str(desc.state).rsplit(".", 1)[-1], len(desc.members or ())


def _last_counters(consumer: Consumer, changelog: str) -> dict[str, int]:
    """System title -> last accepted frame counter, from the dlms_replay table's changelog."""
    try:
        messages = _to_end(consumer, changelog)
    except BrokerError:
        return {}  # no worker ever accepted a frame
    out: dict[str, int] = {}
    for m in messages:
        title = (m.key() or b"").decode("ascii", "replace").upper()
        if m.value():
            out[title] = max(out.get(title, 0), int(m.value()))
    return out


def _dead_letters(
    consumer: Consumer, dl_topic: str, source: str, reason: str, titles: set[str]
) -> tuple[list[DeadLetter], int, int]:
    """(dead letters to replay in source order, how many matched, how many were identical copies)."""
    matched = []
    for m in _to_end(consumer, dl_topic):
        headers = m.headers() or []
        if _header(headers, "dl.reason") != reason or _header(headers, "dl.source.topic") != source:
            continue
        title = (_header(headers, "system_title") or "").upper() or None
        if titles and title not in titles:
            continue
        counter = _header(headers, "frame_counter")
        own = tuple((k, v or b"") for k, v in headers if not k.startswith("dl.") and k not in _EXTRA_HEADERS)
        matched.append(DeadLetter(int(_header(headers, "dl.source.partition") or 0),
                                  int(_header(headers, "dl.source.offset") or 0), m.key(), m.value(), own,
                                  title, int(counter) if counter else None))  # fmt: skip
    matched.sort(key=lambda d: (d.partition, d.offset))
    seen: set[tuple[bytes | None, bytes | None]] = set()
    picked = []
    for d in matched:  # a record dead-lettered again by an earlier replay: keep the original's place
        if (d.key, d.value) not in seen:
            seen.add((d.key, d.value))
            picked.append(d)
    return picked, len(matched), len(matched) - len(picked)


def _produce(producer: Producer, topic: str, items: Iterable[tuple[int, Any, Any, list]]) -> dict[int, list[int]]:
    """Produce (partition, key, value, headers) in order; return delivered offsets per partition."""
    offsets: dict[int, list[int]] = {}
    errors: list[str] = []

    def done(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            offsets.setdefault(msg.partition(), []).append(msg.offset())

    for partition, key, value, headers in items:
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=headers or None, partition=partition,
                                 on_delivery=done)  # fmt: skip
                break
            except BufferError:
                producer.poll(0.1)
    if producer.flush(60) or errors:
        raise BrokerError(f"producing to {topic} failed: {errors[:1] or 'undelivered after 60 s'}")
    return offsets


def _commit(bootstrap: str, config: Mapping[str, str], group: str, tp: TopicPartition) -> None:
    consumer = _consumer(bootstrap, config, group)
    try:
        consumer.commit(offsets=[tp], asynchronous=False)
    finally:
        consumer.close()


def replay_deadletters(
    bootstrap: str,
    *,
    topic_prefix: str,
    consumer_group: str,
    reason: str,
    topic: str,
    system_titles: Iterable[str] = (),
    dry_run: bool = False,
    requeue: bool = True,
    client_config: Mapping[str, str] | None = None,
    announce: Callable[[str], None] = print,
) -> ReplayReport:
    """Re-produce the dead letters of ``reason`` from ``topic`` (suffix, e.g. ``meter.frames``) to it.

    Raises :class:`BrokerError` (before producing anything) when the replay guard
    would refuse the frames: workers still consuming, or newer frames of the same
    meters waiting unconsumed ahead of where the copies would land and no way to
    move them (``requeue`` off, or the broker refuses the offset commit).
    """
    config = dict(client_config or {})
    source, dl_topic = topic_prefix + topic, topic_prefix + "deadletter"
    frames = topic == FRAMES
    report = ReplayReport(topic=source, reason=reason, dry_run=dry_run)
    if frames:
        state, members = _group_state(AdminClient({"bootstrap.servers": bootstrap, **config}), consumer_group)
        if state in _ACTIVE and members:
            raise BrokerError(
                f"consumer group {consumer_group} is {state} with {members} member(s): stop its workers first -- "
                "replayed frames must reach the worker before any newer frame of the same meter is accepted"
            )
        if state in _ACTIVE:  # the embedded Tansu broker keeps a left group "STABLE" and lists no members
            announce(f"the broker reports group {consumer_group} as {state} without members: "
                     "make sure its workers are stopped")  # fmt: skip
    reader = _consumer(bootstrap, config)
    try:
        titles = {t.upper() for t in system_titles}
        letters, report.found, report.duplicates = _dead_letters(reader, dl_topic, source, reason, titles)
        if frames and letters:
            last = _last_counters(reader, f"{consumer_group}-dlms_replay-changelog")
            keep = []
            for d in letters:
                floor = last.get(d.system_title or "")
                if floor is not None and d.frame_counter is not None and d.frame_counter <= floor:
                    report.superseded.append(d)
                else:
                    keep.append(d)
            letters = keep
        report.replayed = len(letters)
        if not letters:
            return report
        committed: dict[int, int] = {}
        if frames:  # newer frames of these meters that wait unconsumed would be accepted before the copies
            group = _consumer(bootstrap, config, consumer_group)
            try:
                parts = sorted({d.partition for d in letters})
                tps = group.committed([TopicPartition(source, p) for p in parts], timeout=15)
            finally:
                group.close()
            committed = {tp.partition: max(tp.offset, 0) for tp in tps}
            keys = {d.key for d in letters}
            for m in _read(reader, source, {p: (o, None) for p, o in committed.items()}):
                if m.key() in keys:
                    report.waiting[m.partition()] = report.waiting.get(m.partition(), 0) + 1
            if report.waiting:
                what = ", ".join(f"{n} in {source}[{p}]" for p, n in sorted(report.waiting.items()))
                if not requeue:
                    announce(f"warning: newer frames of these meters wait unconsumed ({what}); without --requeue "
                             "they are accepted first and the replayed frames end as replayed_frame")  # fmt: skip
                movable = report.waiting if requeue else {}
                for p in movable:  # can the group's offset be moved? (an unchanged commit tells)
                    try:
                        _commit(bootstrap, config, consumer_group, TopicPartition(source, p, committed[p]))
                    except KafkaException as exc:
                        raise BrokerError(
                            f"newer frames of these meters wait unconsumed ({what}) and the broker refuses to "
                            f"move the offsets of {consumer_group} ({exc.args[0].str()}); let the workers "
                            "consume them first, the dead letters can then no longer pass the replay guard"
                        ) from exc
        if dry_run:
            return report
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 20,
                             "message.max.bytes": 16 * 1024 * 1024, "enable.idempotence": False, **config})  # fmt: skip
        items = [(d.partition, d.key, d.value, [*d.headers, ("dl.replayed", f"{d.partition}:{d.offset}".encode())])
                 for d in letters]  # fmt: skip
        delivered = _produce(producer, source, items)
        announce(f"replayed {len(letters)} dead letter(s) ({reason}) to {source}")
        for p in sorted(report.waiting) if requeue else ():
            report.requeued[p] = _requeue(reader, producer, source, consumer_group, config, bootstrap,
                                          committed[p], p, min(delivered[p]))  # fmt: skip
            announce(f"{source}[{p}]: {report.requeued[p]} unconsumed message(s) moved behind the replayed frames")
        return report
    finally:
        reader.close()


def _requeue(
    reader: Consumer,
    producer: Producer,
    source: str,
    group_id: str,
    config: Mapping[str, str],
    bootstrap: str,
    start: int,
    partition: int,
    first_copy: int,
) -> int:
    """Re-produce [start, first_copy) of a partition behind the copies, then commit ``first_copy``."""
    backlog = _read(reader, source, {partition: (start, first_copy)})
    _produce(producer, source, [(partition, m.key(), m.value(), list(m.headers() or [])) for m in backlog])
    try:
        _commit(bootstrap, config, group_id, TopicPartition(source, partition, first_copy))
    except KafkaException as exc:
        raise BrokerError(
            f"re-queued {len(backlog)} message(s) of {source}[{partition}] but could not move the offset of "
            f"{group_id} to {first_copy}: {exc}; they will be processed twice (duplicates are dropped, "
            "frames end as replayed_frame)"
        ) from exc
    return len(backlog)
