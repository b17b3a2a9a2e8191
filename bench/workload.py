"""The fixed benchmark workload: three-phase meter polls (8 measurements) from a fleet of devices.

One *reading* is one poll of one device (8 measurement channels, so 8 *values*,
8 rows in ``readings_store``). Messages are Avro single-object encoded, as the
production gateways send them:

* ``singles``: one MeterReading per message, keyed by device id;
* ``batches``: one MeterReadingBatch of ``batch_size`` readings per message, keyed by gateway id.

Every (device, quantity, ts) is unique within a run, so no row is dropped as a
duplicate and the expected row count is exact.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from confluent_kafka import Producer
from fastavro import schemaless_writer

from pipeline.codecs import RecordType, SchemaStore

QUANTITIES: tuple[str, ...] = (
    "voltage_l1",
    "voltage_l2",
    "voltage_l3",
    "current_l1",
    "current_l2",
    "current_l3",
    "active_power",
    "active_energy_import",
)
VALUES_PER_READING = len(QUANTITIES)
POLL_MS = 15_000  # historical readings are 15 s apart per device
INTERVAL_MS = 900_000  # the 15-min consumption interval the derive stage and the spike rule work on


def straddling_base(end_ms: int, polls: int) -> int:
    """ts of poll 0 of ``polls`` polls ending at or before ``end_ms``, placed so that a 15-min boundary falls
    in their middle. Every run then derives (and judges) the same intervals: a window of a few minutes
    crosses one a third of the time at random, which moved a run's cost by more than an A/B pair measures."""
    half = polls // 2 * POLL_MS
    return (end_ms - polls * POLL_MS + half) // INTERVAL_MS * INTERVAL_MS - half


TENANTS = 20
DEVICES_PER_SITE = 50
DEVICES_PER_GATEWAY = 500

Message = tuple[bytes, bytes]  # (key, value)


def device_id(i: int) -> str:
    return f"bench-em{i:06d}"


def gateway_id(i: int) -> str:
    return f"bench-gw{i:04d}"


class AvroWriter:
    """Avro single-object encoding straight through fastavro (no per-record normalisation)."""

    def __init__(self, store: SchemaStore | None = None) -> None:
        self.store = store or SchemaStore.load()

    def __call__(self, rt: RecordType, record: dict) -> bytes:
        out = io.BytesIO()
        out.write(b"\xc3\x01" + self.store.fingerprint(rt))
        schemaless_writer(out, self.store.parsed(rt), record)
        return out.getvalue()


def registration(i: int, now_ms: int) -> dict:
    site = i // DEVICES_PER_SITE
    return {
        "subject_id": device_id(i),
        "subject_type": "device",
        "kind": "electricity_meter",
        "tenant_id": f"tenant-{site % TENANTS:02d}",
        "site_id": f"site-{site:05d}",
        "branch": f"branch-{site % 7}",
        "timezone": "Europe/Berlin",
        "gateway_id": gateway_id(i // DEVICES_PER_GATEWAY),
        "rated_power_w": 43_000.0,
        "expected_period_s": 15,
        "nominal_voltage": 230.0,
        "nominal_frequency": 50.0,
        "register_ceilings": {},
        "attributes": {"model": "Eastron SDM630"},
        "event": "registered",
        "updated_at": now_ms - 86_400_000,
    }


def registrations(n_devices: int, writer: AvroWriter, now_ms: int) -> list[Message]:
    rt = RecordType.DEVICE_REGISTRATION
    return [(device_id(i).encode(), writer(rt, registration(i, now_ms))) for i in range(n_devices)]


def reading(dev: int, ts: int, k: int) -> dict:
    """A plausible three-phase poll; cheap arithmetic, deterministic."""
    j = (dev * 7 + k) % 50
    v = 229.0 + j * 0.04
    a = 4.0 + j * 0.1
    p = 3 * v * a * 0.95
    return {
        "device_id": device_id(dev),
        "ts": ts,
        "measurements": {
            "voltage_l1": v,
            "voltage_l2": v + 0.3,
            "voltage_l3": v - 0.2,
            "current_l1": a,
            "current_l2": a + 0.1,
            "current_l3": a - 0.1,
            "active_power": round(p, 1),
            "active_energy_import": 1_000_000.0 + dev + k * 3.6,
        },
        "event_id": None,
        "seq": k,
        "quality": 0,
    }


@dataclass(frozen=True)
class Shape:
    """``batch_size`` 1 = single-reading messages, else gateway batches of that many readings."""

    name: str
    batch_size: int

    @property
    def singles(self) -> bool:
        return self.batch_size == 1


SINGLES = Shape("singles", 1)
BATCHES = Shape("batches", 500)


def encode_polls(
    shape: Shape, n_devices: int, polls: Sequence[int], ts_of: Callable[[int, int], int], writer: AvroWriter
) -> list[Message]:
    """Messages for ``polls`` rounds over ``n_devices`` devices (device order within a round).

    ``ts_of(round, message_index)`` gives the reading time of all readings in a message.
    """
    out: list[Message] = []
    if shape.singles:
        rt = RecordType.METER_READING
        for r in polls:
            for d in range(n_devices):
                msg = len(out)
                out.append((device_id(d).encode(), writer(rt, reading(d, ts_of(r, msg), r))))
        return out
    rt = RecordType.METER_READING_BATCH
    size = shape.batch_size
    for r in polls:
        for start in range(0, n_devices, size):
            msg = len(out)
            ts = ts_of(r, msg)
            gw = gateway_id(start // size)
            items = [reading(d, ts, r) for d in range(start, min(start + size, n_devices))]
            out.append((gw.encode(), writer(rt, {"gateway_id": gw, "sent_at": ts, "readings": items})))
    return out


def readings_in(shape: Shape, n_devices: int, n_polls: int) -> int:
    return n_devices * n_polls


def producer(bootstrap: str) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "partitioner": "murmur2_random",
            "linger.ms": 5,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            "message.max.bytes": 16 * 1024 * 1024,
            "enable.idempotence": False,
            "acks": 1,
        }
    )


def _produce_one(p: Producer, topic: str, key: bytes, value: bytes, timestamp: int = 0) -> None:
    while True:
        try:
            p.produce(topic, value=value, key=key, timestamp=timestamp)
            return
        except BufferError:
            p.poll(0.05)


def produce_all(bootstrap: str, topic: str, messages: Sequence[Message]) -> tuple[float, float]:
    """Produce as fast as possible; return (time of the first produce call, time all were acknowledged)."""
    p = producer(bootstrap)
    started = time.time()
    for n, (key, value) in enumerate(messages):
        _produce_one(p, topic, key, value)
        if n % 1000 == 0:
            p.poll(0)
    if p.flush(120) != 0:
        raise RuntimeError(f"{topic}: messages left undelivered")
    return started, time.time()


def produce_paced(bootstrap: str, topic: str, messages: Sequence[Message], t0: float, rate: float) -> float:
    """Produce message ``i`` at wall time ``t0 + i / rate`` (open loop: lateness is not forgiven).

    Returns the largest lag (s) of a produce call behind its schedule.
    """
    p = producer(bootstrap)
    n, total, worst = 0, len(messages), 0.0
    while n < total:
        now = time.time()
        due = min(total, int((now - t0) * rate) + 1) if now >= t0 else 0
        if n < due:
            worst = max(worst, now - (t0 + n / rate))
        while n < due:
            key, value = messages[n]
            _produce_one(p, topic, key, value, int((t0 + n / rate) * 1000))
            n += 1
        p.poll(0)
        time.sleep(0.001)
    if p.flush(120) != 0:
        raise RuntimeError(f"{topic}: messages left undelivered")
    return worst


def chunks(seq: Sequence[Message], size: int) -> Iterator[Sequence[Message]]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]
