"""Faust and ClickHouse wiring of the anomaly stage (kept here so that app.py only names it).

* ``alert_state``: a global table of open episodes (raw bytes, like the registry), so a
  restarted worker neither re-raises nor forgets them; written after a batch is durable.
* the publisher of the ``alerts`` topic, shared by every runner;
* gap attribution from the stored usage of the meter's SIM.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import polars as pl

from pipeline.anomaly import Policy
from pipeline.anomaly.attribution import attribute_gap
from pipeline.anomaly.lifecycle import AlertTracker
from pipeline.anomaly.meter_rules import meter_rules
from pipeline.anomaly.sim_rules import sim_rules
from pipeline.anomaly.stage import Attribute, Derive, MeterAlerts, SimAlerts
from pipeline.codecs import Encoder
from pipeline.settings import Settings
from pipeline.sinks.alerts import AlertPublisher
from pipeline.storage import Database
from pipeline.tenancy import Pseudonymizer, Registry

__all__ = ["AlertWiring", "build_alerts"]


@dataclass
class AlertWiring:
    tracker: AlertTracker
    publisher: AlertPublisher
    policy: Policy
    registry: Registry
    attribute: Attribute

    def meters(self, derive: Derive | None) -> MeterAlerts:
        """A new meter stage (one per agent: rules keep per-device state of their own topic)."""
        return MeterAlerts(meter_rules(), self.tracker, self.policy, self.registry, derive=derive,
                           attribute=self.attribute)  # fmt: skip

    def sims(self) -> SimAlerts:
        return SimAlerts(sim_rules(), self.tracker, self.policy, self.registry)


def _state_table(app: Any, partitions: int) -> tuple[Any, Any]:
    from pipeline.worker.app import TableStore

    table = app.GlobalTable("alert_state", partitions=partitions, key_type=bytes, value_type=bytes)

    def write(key: str, value: bytes | None) -> None:
        k = key.encode()
        if value is None:
            table.data.pop(k, None)
        else:
            table.data[k] = value
        table.send_changelog(zlib.crc32(k) % partitions, k, value, key_serializer="raw", value_serializer="raw")

    return TableStore(table), write


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
    store, write = _state_table(app, settings.topic_partitions)
    tracker = AlertTracker(policy, store, write)
    publisher = AlertPublisher.create(bootstrap, settings.topic("alerts"), encoder,
                                      client_config=settings.kafka_client_config())  # fmt: skip
    return AlertWiring(tracker, publisher, policy, registry, clickhouse_attribute(db, pseudonyms))
