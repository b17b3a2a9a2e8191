"""The Faust application: topics, the registry table, agents and their batch runners.

Agents consume raw bytes in batches (``noack_take``) and hand whole batches to
the processors in :mod:`pipeline.worker.processors`; they acknowledge messages
only after :class:`~pipeline.worker.runner.BatchRunner` made the results durable.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import EventT

from pipeline.catalogue import Catalogue
from pipeline.codecs import Decoder, Encoder, RecordType, SchemaStore
from pipeline.envelope import RawMessage
from pipeline.errors import CodecError
from pipeline.metrics import Metrics
from pipeline.settings import Settings
from pipeline.sinks import ClickHouseSink, DeadLetterSink
from pipeline.storage import Database
from pipeline.tenancy import Pseudonymizer, Registry
from pipeline.validation import SimUsageValidator
from pipeline.worker.alerts import build_alerts
from pipeline.worker.derive import IntervalDeriver, clickhouse_fetch
from pipeline.worker.feed import BatchFeed, pump
from pipeline.worker.frames import (
    FramesProcessor,
    FramesRunner,
    install_expiry_timer,
    load_keys,
    replay_counters_table,
)
from pipeline.worker.ownership import Ownership
from pipeline.worker.processors import Derive, RegistryProcessor, SimUsageProcessor
from pipeline.worker.runner import BatchRunner
from pipeline.worker.wiring import duplicate_filter, meter_derive, reading_validator, readings_processor

log = logging.getLogger(__name__)

BATCH_FED = ("meter.readings", "sim.usage")  # agents fed whole batches by BatchFeed
BATCH_MAX_BYTES = 8 * 1024 * 1024  # a batch-fed agent takes at most this many value bytes at once


def to_raw(event: EventT) -> RawMessage:
    m = event.message
    headers = m.headers.items() if isinstance(m.headers, Mapping) else (m.headers or ())
    return RawMessage(m.topic, m.partition, m.offset, m.key, m.value, tuple(headers), int(m.timestamp * 1000))


class TableStore(Mapping[str, bytes]):
    """Read-only str-keyed view of the registry GlobalTable (raw bytes keys and values)."""

    def __init__(self, table: faust.GlobalTable) -> None:
        self._table = table

    def __getitem__(self, key: str) -> bytes:
        value = self._table.data.get(key.encode())
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return (k.decode() for k in self._table.data.keys())

    def __len__(self) -> int:
        return len(self._table.data)


def _credentials(settings: Settings) -> Any:
    proto = settings.kafka_security_protocol
    if proto == "PLAINTEXT":
        return None
    context = ssl.create_default_context(cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None)
    if settings.kafka_ssl_certfile:
        context.load_cert_chain(
            str(settings.kafka_ssl_certfile), str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None
        )
    if proto == "SSL":
        return faust.SSLCredentials(context)
    password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=password,
        mechanism=settings.kafka_sasl_mechanism or "PLAIN",
        ssl_context=context if proto == "SASL_SSL" else None,
    )


def _schema_registry(settings: Settings) -> Any:
    """A Confluent schema registry client for 0x00-framed Avro, when one is configured."""
    if not settings.schema_registry_url:
        return None
    from confluent_kafka.schema_registry import SchemaRegistryClient

    return SchemaRegistryClient({"url": settings.schema_registry_url})


@dataclass
class Worker:
    app: faust.App
    runners: dict[str, BatchRunner]
    registry: Registry
    db: Database
    metrics: Metrics
    deadletters: DeadLetterSink


def build_worker(settings: Settings, bootstrap: str, db: Database, catalogue: Catalogue, metrics: Metrics) -> Worker:
    """Wire the Faust app. Nothing runs until the Faust worker starts it."""
    embedded = settings.embedded_broker
    app = faust.App(
        settings.consumer_group,
        broker=f"kafka://{bootstrap}",
        broker_credentials=_credentials(settings),
        store="memory://",
        autodiscover=False,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=1,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        broker_rebalance_timeout=4 if embedded else 60,
        stream_buffer_maxsize=max(4096, settings.batch_max_messages * 2),
        web_enabled=True,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        producer_max_request_size=16 * 1024 * 1024,
        consumer_max_fetch_size=16 * 1024 * 1024,
        # Tansu answers a JoinGroup only after half the session timeout: keep it short on the
        # embedded broker (30 s join with the default), production brokers keep the default.
        broker_session_timeout=6 if embedded else 30,
    )

    def raw_topic(name: str) -> faust.TopicT:
        return app.topic(
            settings.topic(name),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.topic_partitions,
        )

    schemas = SchemaStore.load(registry=_schema_registry(settings))
    decoder = Decoder(schemas, max_bytes=settings.max_message_bytes)

    def decode_registration(raw: bytes) -> dict:
        rtype, record = decoder(raw)
        if rtype is not RecordType.DEVICE_REGISTRATION:
            raise CodecError("schema_mismatch", f"{rtype} on the registry topic")
        return record

    registry_holder: list[Registry] = []

    async def on_registry_change(event: EventT) -> None:
        """Another worker (or recovery) changed the table: keep the parsed cache in step."""
        if registry_holder and event.message.key is not None:
            registry_holder[0].apply(event.message.key.decode("utf-8", "replace"), event.message.value or None)

    # Every worker holds the whole registry (a global table) and recovers it from the
    # table's changelog before it processes anything.
    table = app.GlobalTable(
        "registry",
        partitions=settings.topic_partitions,
        # bytes types make Faust use the raw codec for the changelog (it derives serializers from the types)
        key_type=bytes,
        value_type=bytes,
        on_changelog_event=on_registry_change,
    )

    def write_registry(subject_id: str, raw: bytes | None, partition: int) -> None:
        key = subject_id.encode()
        if raw is None:
            table.data.pop(key, None)
        else:
            table.data[key] = raw
        table.send_changelog(partition, key, raw, key_serializer="raw", value_serializer="raw")

    registry = Registry(TableStore(table), decode=decode_registration, write=write_registry)
    registry_holder.append(registry)

    sink = ClickHouseSink(db, max_rows=settings.batch_max_rows, metrics=metrics)
    deadletters = DeadLetterSink.create(
        bootstrap, settings.topic("deadletter"), sink, client_config=settings.kafka_client_config(), metrics=metrics
    )
    pseudonyms = Pseudonymizer(settings.pseudonym_secret)
    lateness = {"lateness_ms": settings.lateness_ms, "future_tolerance_ms": settings.future_tolerance_ms}
    # anomaly rules after derivation; transitions are published before a batch is acked (worker/alerts.py)
    alerts = (
        build_alerts(app, settings, bootstrap, db, registry, pseudonyms, Encoder(schemas))
        if settings.alerts_enabled
        else None
    )

    def detect_meters(derive: Derive | None) -> Derive | None:
        return alerts.meters(derive) if alerts is not None else derive

    out = {"alerts": alerts.publisher, "on_durable": alerts.persist} if alerts is not None else {}
    stored = clickhouse_fetch(db)  # stored readings for intervals and fuel: one reader, both run in one thread

    def readings_stage() -> Derive | None:
        return detect_meters(meter_derive(settings, catalogue, registry, stored))

    frames_stored = clickhouse_fetch(db)  # a connection of its own, opened once (stages are rebuilt on rebalance)

    def frames_stage() -> Derive | None:
        return detect_meters(IntervalDeriver(catalogue, registry, frames_stored) if settings.derive_intervals else None)

    # per-series state is rebuilt when a partition comes back from another worker (worker/ownership.py)
    ownership = Ownership()
    ownership.connect(app)

    def owned(topic: str, factory: Callable[[], Derive | None]) -> Derive | None:
        return ownership.follow(settings.topic(topic), factory)

    runners = {
        "registry.devices": BatchRunner(
            "registry.devices", RegistryProcessor(decoder, registry, pseudonyms), sink, deadletters, metrics
        ),
        "meter.readings": BatchRunner(
            "meter.readings",
            readings_processor(settings, catalogue, registry, decoder, owned("meter.readings", readings_stage)),
            sink,
            deadletters,
            metrics,
            **out,
        ),
        "sim.usage": BatchRunner(
            "sim.usage",
            SimUsageProcessor(
                decoder,
                SimUsageValidator(**lateness),
                registry,
                pseudonyms,
                owned("sim.usage", lambda: alerts.sims() if alerts is not None else None),
            ),
            sink,
            deadletters,
            metrics,
            **out,
        ),
    }
    # meter.frames: DLMS keys from the settings, replay counters in the dlms_replay table (see worker/frames.py)
    frames = FramesProcessor(
        load_keys(settings.dlms_keys_file),
        catalogue,
        reading_validator(settings, catalogue),
        registry,
        duplicate_filter(settings),
        replay_counters_table(app, settings.topic_partitions),
        max_wait_ms=settings.dlms_max_wait_ms,
        derive=owned("meter.frames", frames_stage),
    )
    runners["meter.frames"] = FramesRunner("meter.frames", frames, sink, deadletters, metrics, **out)
    install_expiry_timer(app, frames, deadletters, sink, settings.dlms_max_wait_ms)

    # High-volume topics bypass Faust's per-event Stream path: whole fetched batches, bulk acks
    # after durability, insert of batch N overlapped with processing of batch N+1 (worker/feed.py).
    feed = BatchFeed(app, [settings.topic(name) for name in BATCH_FED])

    def make_agent(name: str, runner: BatchRunner) -> None:
        async def agent(stream: faust.StreamT) -> None:
            if name in BATCH_FED:  # the stream stays subscribed (Faust assigns its partitions) but idle
                await pump(feed, settings.topic(name), runner.prepare, runner.persist,
                           max_messages=settings.batch_max_messages, max_bytes=BATCH_MAX_BYTES,
                           within=settings.batch_max_seconds)  # fmt: skip
            async for events in stream.noack_take(settings.batch_max_messages, within=settings.batch_max_seconds):
                await runner.run([to_raw(e) for e in events])
                for e in events:
                    await stream.ack(e)

        agent.__name__ = agent.__qualname__ = f"agent_{name.replace('.', '_')}"
        app.agent(raw_topic(name), name=name)(agent)

    for name, runner in runners.items():
        make_agent(name, runner)
    # 100 ms instead of Faust's hard-coded 1500: Tansu holds every fetch that long even with data
    # waiting; a Kafka broker answers as soon as there is data, so it only adds idle polls there.
    feed.install(fetch_max_wait_ms=100)

    worker = Worker(app, runners, registry, db, metrics, deadletters)
    from pipeline.worker.web import install_views

    install_views(worker)
    return worker
