"""``telemetry demo``: embedded broker + worker + simulated fleet, then a summary.

The worker runs as a child process (the same ``telemetry worker`` an operator
runs); this process starts the broker, produces the fleet, follows progress on
the worker's /status endpoint and reads results through its /query endpoint.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline.broker import embedded_broker, ensure_topics
from pipeline.broker.embedded import free_port
from pipeline.settings import ClickHouseTarget, Settings
from pipeline.storage import connect
from pipeline.worker.process import WorkerProcess

DEMO_DLMS_METERS = 4  # smart meters pushing encrypted frames (meter.frames), keys written for the worker
# The demo's own database in the configured ClickHouse, emptied at each run. Two runs of one seed simulate
# the same devices over overlapping times with other register values: written into one database, the
# second run's readings conflicted with the first's, and its summary counted both runs' alerts.
DEMO_DATABASE = "telemetry_demo"


def fresh_database(settings: Settings, name: str) -> Settings:
    """``settings`` writing into database ``name`` of the configured ClickHouse, dropped first if it exists.
    Raises StorageError (e.g. the chDB directory is in use by a running worker)."""
    url = settings.clickhouse.with_database(name)
    db = connect(ClickHouseTarget(url), create_database=False)
    try:
        db.command(f"DROP DATABASE IF EXISTS {name} SYNC")
    finally:
        db.close()
    return settings.model_copy(update={"clickhouse_url": url})


def _start_worker(
    settings: Settings, bootstrap: str, port: int, console: Console, dlms_keys: Path | None = None
) -> WorkerProcess:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "CLICKHOUSE_URL": settings.clickhouse_url,
        "TOPIC_PREFIX": settings.topic_prefix,
        "CONSUMER_GROUP": settings.consumer_group,
        "DATA_DIR": str(settings.data_dir),
        **({"DLMS_KEYS_FILE": str(dlms_keys)} if dlms_keys else {}),  # the simulated meters' keys
    }
    # a fresh log per demo run
    (settings.data_dir / "worker.log").unlink(missing_ok=True)
    worker = WorkerProcess(env, settings.data_dir / "worker.log", port)
    with console.status("starting the worker (group join on the embedded broker takes a few seconds)…"):
        return worker.start(120)


def _wait(client: WorkerProcess, expected: dict[str, int], console: Console, what: str) -> float:
    started = time.monotonic()
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        tasks = {t: progress.add_task(f"{what} {t}", total=n) for t, n in expected.items() if n}
        while True:
            client.check_alive()
            processed = client.status()["processed"]
            for t, task in tasks.items():
                progress.update(task, completed=min(processed.get(t, 0), expected[t]))
            if all(processed.get(t, 0) >= n for t, n in expected.items()):
                return time.monotonic() - started
            time.sleep(0.25)


def _table(console: Console, title: str, columns: list[str], rows: list[list[Any]]) -> None:
    t = Table(*columns, title=title, title_justify="left")
    for r in rows:
        t.add_row(*("" if v is None else (f"{v:,.3f}" if isinstance(v, float) else str(v)) for v in r))
    console.print(t)


def run_demo(
    settings: Settings, *, seed: int, tenants: int, sites_per_tenant: int, days: float, batch: bool, console: Console
) -> dict[str, Any]:
    from pipeline.codecs import Encoder, SchemaStore
    from pipeline.simulate import SimConfig, build_scenario, produce

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings = fresh_database(settings, DEMO_DATABASE)
    config = SimConfig(seed=seed, tenants=tenants, sites_per_tenant=sites_per_tenant, days=days, batch=batch,
                       dlms_meters=DEMO_DLMS_METERS)  # fmt: skip
    now_ms = int(time.time() * 1000)
    with console.status("simulating the fleet…"):
        scenario = build_scenario(config, now_ms, Encoder(SchemaStore.load()))
    truth_path = settings.data_dir / "ground_truth.json"
    truth_path.write_text(scenario.truth.to_json())
    keys_path = scenario.write_dlms_keys(settings.data_dir / "dlms_keys.json")
    console.print(
        f"fleet: {len(scenario.registrations)} registrations, {len(scenario.telemetry)} telemetry messages "
        f"(ground truth: {truth_path})"
    )

    with embedded_broker(log_path=settings.data_dir / "broker.log") as broker:
        console.print(f"embedded Kafka broker (Tansu, in memory) on {broker.bootstrap}")
        ensure_topics(broker.bootstrap, settings.topic_prefix, settings.topic_partitions)
        client = _start_worker(settings, broker.bootstrap, free_port(), console, keys_path)
        try:
            produce(scenario.registrations, bootstrap=broker.bootstrap, topic_prefix=settings.topic_prefix)
            _wait(client, {"registry.devices": len(scenario.registrations)}, console, "registering")
            by_topic: dict[str, int] = {}
            for m in scenario.telemetry:
                by_topic[m.topic] = by_topic.get(m.topic, 0) + 1
            started = time.monotonic()
            produce(scenario.telemetry, bootstrap=broker.bootstrap, topic_prefix=settings.topic_prefix)
            _wait(client, by_topic, console, "ingesting")
            elapsed = time.monotonic() - started
            summary = _summary(client, console, by_topic, elapsed)
        finally:
            client.stop()
    console.print(
        f"\nClickHouse data stays in {settings.clickhouse.redacted()} until the next demo run; explore it with "
        f'[bold]telemetry query --database {DEMO_DATABASE} "SELECT …"[/bold]'
    )
    return summary


def _summary(client: WorkerProcess, console: Console, by_topic: dict[str, int], elapsed: float) -> dict[str, Any]:
    _, rows = client.query("SELECT count() FROM readings")
    readings_rows = int(rows[0][0])
    console.print(
        f"\n[bold]ingested[/bold] {sum(by_topic.values()):,} messages in {elapsed:.1f} s → "
        f"{readings_rows:,} reading values ({readings_rows / max(elapsed, 1e-9):,.0f} values/s end to end)"
    )
    _table(console, "Records in, by topic", ["topic", "messages"], [[t, n] for t, n in sorted(by_topic.items())])
    queries = {
        "Rows by table and tenant": "SELECT tbl, tenant_id, rows FROM ("
        "SELECT 'readings' AS tbl, tenant_id, count() AS rows FROM readings GROUP BY tenant_id "
        "UNION ALL SELECT 'sim_usage', tenant_id, count() FROM sim_usage GROUP BY tenant_id "
        "UNION ALL SELECT 'device_registry', tenant_id, count() FROM device_registry GROUP BY tenant_id) "
        "ORDER BY tbl, tenant_id",
        "Rejected, by reason": "SELECT reason, src_topic, sum(records) AS records, any(example_detail) AS example "
        "FROM deadletter_summary GROUP BY reason, src_topic ORDER BY records DESC",
        "Energy per site (kWh from 15-minute intervals; estimated = gap-filled)": "SELECT tenant_id, site_id, "
        "round(sum(measured) / 1000, 1) AS measured_kwh, round(sum(estimated) / 1000, 1) AS estimated_kwh, "
        "round(sum(cost), 2) AS cost, any(currency) AS currency FROM consumption_daily_site "
        "WHERE quantity = 'active_energy_import' GROUP BY tenant_id, site_id ORDER BY measured_kwh DESC LIMIT 8",
        "Register events found while deriving intervals": "SELECT kind, quantity, count() AS events, "
        "uniqExact(device_id) AS devices FROM register_events GROUP BY kind, quantity ORDER BY kind, quantity",
        "Voltage L1 per tenant and local day (V)": "SELECT tenant_id, day, round(min, 1) AS min_v, "
        "round(avg, 1) AS avg_v, round(max, 1) AS max_v, n AS readings FROM instant_daily_tenant "
        "WHERE quantity = 'voltage_l1' ORDER BY tenant_id, day",
        "Generator fuel per site (L; runtime in hours)": "SELECT tenant_id, site_id, round(sum(used_l), 1) AS used_l, "
        "round(sum(refuel_l), 1) AS refuel_l, round(sum(unexplained_drop_l), 1) AS unexplained_l, "
        "round(sum(runtime_s + runtime_estimated_s) / 3600, 1) AS run_h FROM fuel_daily "
        "GROUP BY tenant_id, site_id ORDER BY used_l DESC LIMIT 8",
        "SIM data per tenant and day (MB)": "SELECT tenant_id, day, sims, round((bytes_up + bytes_down) / 1e6, 1) "
        "AS mb, sms_mo, sessions FROM sim_usage_daily_tenant ORDER BY tenant_id, day",
        "Alert episodes by rule and peak severity (gap causes from the linked SIM's usage)": "SELECT rule, "
        "['info', 'warning', 'critical'][peak] AS severity, count() AS episodes, countIf(cleared) AS cleared, "
        "arrayStringConcat(arraySort(groupUniqArrayIf(cause, cause != '')), ', ') AS causes FROM (SELECT alert_id, "
        "any(rule) AS rule, max(indexOf(['info', 'warning', 'critical'], severity)) AS peak, "
        "max(state = 'cleared') AS cleared, any(attributes['cause']) AS cause FROM alerts GROUP BY alert_id) "
        "GROUP BY rule, peak ORDER BY rule, peak",
        "Decrypted smart meters (DLMS/COSEM frames on meter.frames)": "SELECT tenant_id, device_id, "
        "count() AS n_values, max(ts) AS last_push, round(argMaxIf(value, ts, quantity = 'active_energy_import') "
        "/ 1000, 1) AS import_kwh, countIf(bitAnd(flags, 3) != 0) AS clock_flagged FROM readings_store FINAL "
        "WHERE src_topic LIKE '%meter.frames' GROUP BY tenant_id, device_id ORDER BY tenant_id, device_id",
    }
    out: dict[str, Any] = {"messages": by_topic, "seconds": elapsed, "readings_rows": readings_rows}
    for title, sql in queries.items():
        columns, rows = client.query(sql)
        _table(console, title, columns, rows)
        out[title] = rows
    return out
