"""Migrations and the ClickHouse sink against real chDB (in-process), one database per test."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.errors import MigrationError, StorageError
from pipeline.resources import sql_dir
from pipeline.sinks import ClickHouseSink
from pipeline.storage import Database, applied_migrations, migrate
from pipeline.storage.migrate import load_migrations
from pipeline.worker.schemas import READINGS

BASE_MS = int(dt.datetime(2026, 11, 1, tzinfo=dt.UTC).timestamp() * 1000)  # recent: older rows would be TTL'd


def _readings(rows: list[tuple[str, str, int, float, int]]) -> pa.Table:
    """(device, quantity, ms after BASE_MS, value, source offset) → a readings_store batch."""
    ts = [dt.datetime.fromtimestamp((BASE_MS + r[2]) / 1000, dt.UTC) for r in rows]
    return pa.table(
        {
            "tenant_id": ["t1"] * len(rows),
            "site_id": ["s1"] * len(rows),
            "branch": [""] * len(rows),
            "device_id": [r[0] for r in rows],
            "quantity": [r[1] for r in rows],
            "ts": ts,
            "value": [r[3] for r in rows],
            "flags": [0] * len(rows),
            "quality": [0] * len(rows),
            "gateway_id": [""] * len(rows),
            "src_topic": ["t.meter.readings"] * len(rows),
            "src_partition": [0] * len(rows),
            "src_offset": [r[4] for r in rows],
        },
        schema=READINGS,
    )


def test_migrations_apply_once_and_every_table_has_a_ttl(database: Database) -> None:
    assert migrate(database) == []  # already applied by the fixture
    assert set(applied_migrations(database)) == {m.name for m in load_migrations()}
    _, rows = database.query_rows(
        "SELECT name, engine_full FROM system.tables WHERE database = {db:String} AND engine LIKE '%MergeTree'",
        parameters={"db": database.name},
    )
    data_tables = {name: engine for name, engine in rows if name != "schema_migrations"}
    assert {
        "readings_store",
        "sim_usage_store",
        "sim_identity",
        "device_registry_store",
        "deadletter_store",
        "audit_log",
    } <= set(data_tables)
    for name, engine in data_tables.items():
        assert "TTL" in engine, f"{name} has no TTL"
        assert "ORDER BY (tenant_id" in engine, f"{name}: primary key must start with tenant_id"


def test_an_edited_applied_migration_is_refused(database: Database, tmp_path: Path) -> None:
    for m in load_migrations():
        (tmp_path / m.name).write_text(m.sql)
    first = sorted(tmp_path.glob("*.sql"))[1]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(database, tmp_path)


def test_migrations_are_found_from_the_package(tmp_path: Path) -> None:
    assert (sql_dir() / "001_database.sql").is_file()


def test_redelivered_rows_do_not_show_twice_and_the_first_value_wins(database: Database) -> None:
    sink = ClickHouseSink(database, max_rows=2)
    batch = _readings(
        [
            ("m1", "voltage_l1", 1_000, 230.0, 10),
            ("m1", "voltage_l1", 2_000, 231.0, 11),
            ("m1", "frequency", 1_000, 50.0, 10),
        ]
    )
    sink.add("readings_store", "t.meter.readings", 0, batch)
    asyncio.run(sink.flush())
    sink.add("readings_store", "t.meter.readings", 0, batch)  # the same messages again
    sink.add("readings_store", "t.meter.readings", 0, _readings([("m1", "voltage_l1", 1_000, 999.0, 20)]))
    asyncio.run(sink.flush())
    database.command(f"USE {database.name}")
    _, rows = database.query_rows(
        f"SELECT quantity, toUnixTimestamp64Milli(ts) - {BASE_MS}, value FROM readings ORDER BY ALL"
    )
    assert rows == [("frequency", 1_000, 50.0), ("voltage_l1", 1_000, 230.0), ("voltage_l1", 2_000, 231.0)]


def test_sink_retries_transient_errors_and_never_drops(database: Database) -> None:
    calls: list[int] = []

    class Flaky(ClickHouseSink):
        def write(self, destination: str, table: pa.Table) -> None:
            calls.append(table.num_rows)
            if len(calls) < 3:
                raise StorageError("connection refused", retry_after=0.01)
            super().write(destination, table)

    sink = Flaky(database, max_rows=1000, max_backoff=0.01)
    sink.add("readings_store", "t", 0, _readings([("m2", "frequency", 5_000, 50.0, 1)]))
    written = asyncio.run(sink.flush())
    assert written == {"readings_store": 1} and calls == [1, 1, 1]
    _, rows = database.query_rows(f"SELECT count() FROM {database.table('readings_store')} WHERE device_id = 'm2'")
    assert rows == [(1,)]


def test_a_permanent_error_is_raised_not_retried(database: Database) -> None:
    sink = ClickHouseSink(database, max_rows=1000, max_backoff=0.01)
    sink.add("no_such_table", "t", 0, _readings([("m3", "frequency", 5_000, 50.0, 1)]))
    with pytest.raises(StorageError) as info:
        asyncio.run(sink.flush())
    assert info.value.retry_after is None and info.value.code == 60


def test_a_reader_connection_reads_while_the_writer_holds_its_lock(database: Database) -> None:
    sink = ClickHouseSink(database, max_rows=1000)
    sink.add("readings_store", "t", 0, _readings([("m4", "frequency", 5_000, 50.0, 1)]))
    asyncio.run(sink.flush())
    reader = database.reader()
    assert reader is not database and reader.lock is not database.lock
    sql = f"SELECT count() FROM {database.table('readings_store')} FINAL WHERE device_id = 'm4'"
    with database.lock:  # an insert in progress holds this: the reader does not wait for it
        assert reader.query_arrow(sql).column(0).to_pylist() == [1]
    reader.close()


def test_a_target_names_another_database_keeping_the_rest_of_its_url() -> None:
    from pipeline.settings import ClickHouseTarget

    embedded = ClickHouseTarget(ClickHouseTarget("chdb:///data/ch?database=telemetry&x=1").with_database("demo_1"))
    assert (embedded.path, embedded.database) == (Path("/data/ch"), "demo_1")
    assert embedded.url == "chdb:///data/ch?database=demo_1&x=1"
    server = ClickHouseTarget(ClickHouseTarget("https://u:p%40ss@ch.example:8443/telemetry").with_database("demo_1"))
    assert (server.host, server.port, server.password, server.database) == ("ch.example", 8443, "p@ss", "demo_1")
    with pytest.raises(ValueError, match="database name"):
        embedded.with_database("demo; DROP TABLE readings")


def test_the_demo_starts_from_an_empty_database_of_its_own(database: Database) -> None:
    """A second demo run must not see the first one's rows (same devices, other register values)."""
    from pipeline.demo import fresh_database
    from pipeline.settings import ClickHouseTarget, Settings
    from pipeline.storage import connect

    name = f"{database.name}_demo"
    previous = connect(ClickHouseTarget(database.target.with_database(name)))
    migrate(previous)
    previous.insert_arrow("readings_store", _readings([("m1", "active_energy_import", 0, 1.0, 0)]))
    assert previous.scalar(f"SELECT count() FROM {name}.readings_store") == 1
    settings = fresh_database(Settings(clickhouse_url=database.target.url), name)
    assert settings.clickhouse.database == name and settings.clickhouse.path == database.target.path
    assert database.scalar("SELECT count() FROM system.databases WHERE name = {n:String}", {"n": name}) == 0
    assert database.scalar("SELECT count() FROM system.tables WHERE database = {d:String}", {"d": database.name}) > 0
