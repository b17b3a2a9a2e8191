"""Faust and ClickHouse wiring of the anomaly stage (kept here so that app.py only names it).

* ``alert_state``: a global table of open episodes (raw bytes, like the registry), so a
  restarted worker neither re-raises nor forgets them; written after a batch is durable,
  and acknowledged by the broker before the batch's input is. The writes go through a
  librdkafka producer, not Faust's ``send_changelog``: when ten thousand meters fall silent
  at once, every batch changes ten thousand episodes, and Faust's per-message path cost
  seconds of the event loop where librdkafka takes milliseconds. Like the alerts and the
  dead letters, they go through an :class:`~pipeline.sinks.outbox.Outbox`.
* the publisher of the ``alerts`` topic, shared by every runner;
* gap attribution from the stored usage of the meter's SIM.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import polars as pl
from confluent_kafka import Producer

from pipeline.anomaly import Policy
from pipeline.anomaly.attribution import attribute_gap
from pipeline.anomaly.lifecycle import AlertTracker
from pipeline.anomaly.meter_rules import meter_rules
from pipeline.anomaly.sim_rules import sim_rules
from pipeline.anomaly.stage import Attribute, Derive, MeterAlerts, SimAlerts
from pipeline.codecs import Encoder
from pipeline.settings import Settings
from pipeline.sinks.alerts import AlertPublisher
from pipeline.sinks.outbox import Outbox
from pipeline.storage import Database
from pipeline.tenancy import Pseudonymizer, Registry

__all__ = ["AlertWiring", "ChangelogWriter", "build_alerts"]


class ChangelogWriter:
    """Writes of a Faust global table (raw bytes) straight to its changelog topic; ``flush`` waits
    until the broker acknowledged them, re-sending on failure (Faust reads them back into the
    table on every worker)."""

    def __init__(self, table: Any, partitions: int, producer: Producer) -> None:
        self._table = table
        self._partitions = partitions
        self._outbox = Outbox(producer, table.changelog_topic_name, "alert state")

    def write(self, key: str, value: bytes | None) -> None:
        k = key.encode()
        if value is None:
            self._table.data.pop(k, None)
        else:
            self._table.data[k] = value
        self._outbox.send(k, value, partition=zlib.crc32(k) % self._partitions)

    async def flush(self) -> None:
        await self._outbox.flush()


@dataclass
class AlertWiring:
    tracker: AlertTracker
    publisher: AlertPublisher
    policy: Policy
    registry: Registry
    attribute: Attribute
    state: ChangelogWriter

    async def persist(self) -> None:
        """After a batch is durable: the changed episodes to ``alert_state``, acknowledged."""
        self.tracker.persist()
        await self.state.flush()

    def meters(self, derive: Derive | None) -> MeterAlerts:
        """A new meter stage (one per agent: rules keep per-device state of their own topic)."""
        return MeterAlerts(meter_rules(), self.tracker, self.policy, self.registry, derive=derive,
                           attribute=self.attribute)  # fmt: skip

    def sims(self) -> SimAlerts:
        return SimAlerts(sim_rules(), self.tracker, self.policy, self.registry)


def _state_table(app: Any, partitions: int, producer: Producer) -> tuple[Any, ChangelogWriter]:
    from pipeline.worker.app import TableStore

    table = app.GlobalTable("alert_state", partitions=partitions, key_type=bytes, value_type=bytes)
    return TableStore(table), ChangelogWriter(table, partitions, producer)


def clickhouse_attribute(db: Database, pseudonyms: Pseudonymizer) -> Attribute:
    """Cause of a meter gap from its SIM's stored usage (sim_usage_store, current values)."""

    def attribute(tenant: str, iccid: str, start_ms: int, end_ms: int) -> tuple[str, str]:
        sim_id = pseudonyms(tenant, iccid) or ""
        table = db.query_arrow(
            "SELECT toUnixTimestamp64Milli(period_start) AS period_start_ms, "
            "toUnixTimestamp64Milli(period_end) AS period_end_ms, sessions, bytes_up, bytes_down "
            f"FROM {db.table('sim_usage_store')} FINAL WHERE tenant_id = {{t:String}} AND sim_id = {{s:String}} "
            "AND period_end > fromUnixTimestamp64Milli({a:Int64}) - INTERVAL 1 DAY "
            "AND period_start < fromUnixTimestamp64Milli({b:Int64}) + INTERVAL 1 DAY",
            parameters={"t": tenant, "s": sim_id, "a": start_ms, "b": end_ms},
        )
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        return attribute_gap(start_ms, end_ms, frame), sim_id

    return attribute


def build_alerts(app: Any, settings: Settings, bootstrap: str, db: Database, registry: Registry,
                 pseudonyms: Pseudonymizer, encoder: Encoder) -> AlertWiring:  # fmt: skip
    policy = Policy.load(settings.alert_policy_file)  # ConfigError at start for a bad file
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all",
                         **settings.kafka_client_config()})  # fmt: skip
    store, state = _state_table(app, settings.topic_partitions, producer)
    tracker = AlertTracker(policy, store, state.write)
    publisher = AlertPublisher.create(bootstrap, settings.topic("alerts"), encoder,
                                      client_config=settings.kafka_client_config())  # fmt: skip
    return AlertWiring(tracker, publisher, policy, registry, clickhouse_attribute(db, pseudonyms), state)
