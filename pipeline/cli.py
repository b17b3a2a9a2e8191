"""The ``telemetry`` command line. Settings are built here, once, and passed down."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipeline.errors import StorageError, TelemetryError
from pipeline.settings import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Smart-meter and SIM telemetry pipeline.")
db_app = typer.Typer(no_args_is_help=True, help="ClickHouse schema.")
app.add_typer(db_app, name="db")
console = Console()


def _settings(**overrides: object) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except Exception as exc:  # pydantic ValidationError: show it plainly
        console.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from exc


@app.command()
def broker(port: Annotated[int, typer.Option(help="loopback port (0 = any free port)")] = 9092) -> None:
    """Run the embedded Tansu broker in the foreground (in-memory: data is lost when it stops)."""
    from pipeline.broker import embedded_broker

    with embedded_broker(port or None) as b:
        console.print(f"embedded broker on [bold]{b.bootstrap}[/bold] (memory only); Ctrl-C to stop")
        console.print(f"  export KAFKA_BOOTSTRAP_SERVERS={b.bootstrap}")
        try:
            while b.running:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass


@app.command()
def worker(
    web_port: Annotated[int | None, typer.Option(help="HTTP port for /metrics, /health, /query")] = None,
) -> None:
    """Run the stream worker (starts an embedded broker if KAFKA_BOOTSTRAP_SERVERS is unset)."""
    from pipeline.worker import run_worker

    run_worker(_settings(web_port=web_port))


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply the DDL in sql/ to the configured ClickHouse (idempotent)."""
    from pipeline.storage import connect, migrate

    settings = _settings()
    db = connect(settings.clickhouse)
    applied = migrate(db)
    console.print(
        f"{settings.clickhouse.redacted()}: " + (f"applied {', '.join(applied)}" if applied else "schema up to date")
    )


def _print_result(columns: list[str], rows: list[list[object]], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps({"columns": columns, "rows": rows}, default=str) + "\n")
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)
    console.print(f"{len(rows)} row(s)")


@app.command()
def query(
    sql: str,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    via_worker: Annotated[
        bool | None,
        typer.Option(
            help="send the query to a running worker's /query endpoint "
            "(default: only when the chDB directory is in use)"
        ),
    ] = None,
    database: Annotated[
        str | None,
        typer.Option(help="a database other than the configured one, e.g. the demo's telemetry_demo"),
    ] = None,
) -> None:
    """Run a read-only SQL statement against the configured ClickHouse and print the result.

    With chDB (the default) only one process can open the data directory: while a
    worker or demo runs, the query goes to that worker's HTTP endpoint (and its database) instead.
    """
    settings = _settings()
    if database is not None:
        try:
            settings = settings.model_copy(update={"clickhouse_url": settings.clickhouse.with_database(database)})
        except ValueError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from exc
    if via_worker is not True:
        from pipeline.storage import connect
        from pipeline.worker.web import _READ_ONLY

        try:
            db = connect(settings.clickhouse, create_database=False)
        except StorageError as exc:
            if via_worker is False or exc.code != 76:  # 76: chDB directory locked by another process
                raise
        else:
            if not _READ_ONLY.match(sql):
                console.print("[red]only read-only statements are accepted[/red]")
                raise typer.Exit(2)
            db.command(f"USE {db.name}")
            columns, rows = db.query_rows(sql)
            _print_result(columns, [list(r) for r in rows], as_json)
            return
    url = f"http://{settings.web_host}:{settings.web_port}/query"
    req = urllib.request.Request(
        url, data=json.dumps({"sql": sql}).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read() or b"{}")
        console.print(f"[red]query failed:[/red] {body.get('error', exc)}")
        raise typer.Exit(1) from exc
    except OSError as exc:
        console.print(f"[red]no worker answers on {url}:[/red] {exc}")
        raise typer.Exit(1) from exc
    _print_result(body["columns"], body["rows"], as_json)


def main() -> None:
    try:
        app()
    except TelemetryError as exc:
        console.print(f"[red]error:[/red] {exc}")
        sys.exit(1)


@app.command()
def demo(
    seed: Annotated[int, typer.Option(help="simulator seed")] = 7,
    tenants: Annotated[int, typer.Option(help="number of tenants")] = 3,
    sites_per_tenant: Annotated[int, typer.Option(help="sites per tenant")] = 3,
    days: Annotated[float, typer.Option(help="days of history")] = 2.0,
    batch: Annotated[bool, typer.Option(help="gateway batches (else single-reading messages)")] = True,
) -> None:
    """Embedded broker + worker + simulated fleet with faults; prints what came in and what was rejected."""
    from pipeline.demo import run_demo

    settings = _settings()
    if not settings.embedded_broker:
        console.print("[yellow]the demo always runs on an embedded broker; KAFKA_BOOTSTRAP_SERVERS is ignored[/yellow]")
    run_demo(
        settings, seed=seed, tenants=tenants, sites_per_tenant=sites_per_tenant, days=days, batch=batch, console=console
    )


@app.command()
def simulate(
    seed: Annotated[int, typer.Option(help="simulator seed (same seed, same bytes)")] = 7,
    tenants: Annotated[int, typer.Option()] = 3,
    sites_per_tenant: Annotated[int, typer.Option()] = 3,
    days: Annotated[float, typer.Option(help="days of history ending now")] = 2.0,
    batch: Annotated[bool, typer.Option(help="gateway batches (else single-reading messages)")] = True,
    faults: Annotated[bool, typer.Option(help="inject faults")] = True,
    rate: Annotated[float, typer.Option(help="messages per second (0 = as fast as possible)")] = 0.0,
    truth: Annotated[str | None, typer.Option(help="write the ground truth JSON here")] = None,
) -> None:
    """Produce a seeded, realistic fleet (registrations first) to the configured Kafka."""
    from pipeline.codecs import Encoder, SchemaStore
    from pipeline.simulate import SimConfig, build_scenario, produce

    settings = _settings()
    if settings.embedded_broker:
        console.print("[red]set KAFKA_BOOTSTRAP_SERVERS[/red] (e.g. to the address `telemetry broker` prints)")
        raise typer.Exit(2)
    scenario = build_scenario(
        SimConfig(seed=seed, tenants=tenants, sites_per_tenant=sites_per_tenant, days=days, batch=batch, faults=faults),
        int(time.time() * 1000),
        Encoder(SchemaStore.load()),
    )
    if truth:
        with open(truth, "w", encoding="utf-8") as fh:
            fh.write(scenario.truth.to_json())
    from pipeline.broker import ensure_topics

    bootstrap = settings.kafka_bootstrap_servers or ""
    ensure_topics(
        bootstrap, settings.topic_prefix, settings.topic_partitions, client_config=settings.kafka_client_config()
    )
    n = produce(
        scenario.registrations,
        bootstrap=bootstrap,
        topic_prefix=settings.topic_prefix,
        producer_config=settings.kafka_client_config(),
    )
    n += produce(
        scenario.telemetry,
        bootstrap=bootstrap,
        topic_prefix=settings.topic_prefix,
        rate=rate or None,
        producer_config=settings.kafka_client_config(),
    )
    console.print(f"produced {n:,} messages to {bootstrap} (prefix {settings.topic_prefix!r})")


deadletter_app = typer.Typer(no_args_is_help=True, help="The dead-letter topic.")
app.add_typer(deadletter_app, name="deadletter")


@deadletter_app.command("replay")
def deadletter_replay(
    reason: Annotated[str, typer.Option(help="dl.reason of the records to replay, e.g. unknown_key")],
    topic: Annotated[str, typer.Option(help="their source topic, without the prefix, e.g. meter.frames")],
    system_title: Annotated[
        list[str] | None, typer.Option(help="meter.frames: only frames of this system title (repeatable)")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="count what would be replayed, send nothing")] = False,
    requeue: Annotated[
        bool, typer.Option(help="meter.frames: move unconsumed newer frames of the same meters behind the copies")
    ] = True,
) -> None:
    """Send dead letters of one reason back to their source topic (see docs/dlms.md for meter.frames).

    For meter.frames the workers must be stopped: a replayed frame passes the replay guard
    only if no newer frame of its meter was accepted before it.
    """
    from pipeline.deadletter_replay import replay_deadletters
    from pipeline.envelope import Reason

    if reason not in {r.value for r in Reason}:
        console.print(f"[red]unknown reason {reason!r}[/red]; one of: {', '.join(r.value for r in Reason)}")
        raise typer.Exit(2)
    settings = _settings()
    if settings.embedded_broker:
        console.print("[red]set KAFKA_BOOTSTRAP_SERVERS[/red] (the embedded broker keeps nothing between runs)")
        raise typer.Exit(2)
    report = replay_deadletters(
        settings.kafka_bootstrap_servers or "",
        topic_prefix=settings.topic_prefix,
        consumer_group=settings.consumer_group,
        reason=reason,
        topic=topic,
        system_titles=system_title or (),
        dry_run=dry_run,
        requeue=requeue,
        client_config=settings.kafka_client_config(),
        announce=console.print,
    )
    console.print(
        f"{report.topic}: {report.found} dead letter(s) with reason {reason}, {report.duplicates} identical "
        f"cop(ies) skipped, {len(report.superseded)} frame(s) already overtaken by a newer accepted frame "
        f"(they would end as replayed_frame), {report.replayed} {'to replay' if dry_run else 'replayed'}"
    )
    for d in report.superseded[:10]:
        console.print(f"  not replayed: system title {d.system_title}, frame counter {d.frame_counter}")
    for partition, n in sorted(report.waiting.items()):
        moved = "moved behind the copies" if partition in report.requeued else "to be moved behind the copies"
        console.print(f"  {report.topic}[{partition}]: {n} newer frame(s) of these meters waiting, backlog {moved}")


@app.command()
def bench(
    quick: Annotated[bool, typer.Option(help="tiny workload: checks the harness, not the pipeline")] = False,
    out: Annotated[str | None, typer.Option(help="JSON result file (default bench/results/latest.json)")] = None,
    env: Annotated[
        list[str] | None,
        typer.Option(help="KEY=VALUE for the pipeline workers (repeatable), e.g. DERIVE_INTERVALS=false"),
    ] = None,
) -> None:
    """Throughput benchmark on the embedded broker and chDB (see bench/README.md); needs the repository checkout."""
    from pathlib import Path

    try:
        from bench import run_bench
        from bench.report import parse_env
    except ImportError as exc:
        console.print("[red]the bench/ package is not importable: run from the repository checkout[/red]")
        raise typer.Exit(2) from exc
    run_bench(quick=quick, out=Path(out) if out else None, worker_env=parse_env(env or []))


alerts_app = typer.Typer(no_args_is_help=True, help="The alerts topic.")
app.add_typer(alerts_app, name="alerts")


@alerts_app.command("tail")
def alerts_tail(
    tenant: Annotated[str | None, typer.Option(help="only this tenant's alerts")] = None,
    severity: Annotated[str | None, typer.Option(help="this severity and above: info, warning, critical")] = None,
    from_beginning: Annotated[bool, typer.Option(help="start at the oldest retained transition")] = False,
    limit: Annotated[int, typer.Option(help="stop after this many transitions (0 = follow forever)")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """Print alert transitions (raised / updated / cleared) as they are published."""
    from pipeline.anomaly import Severity
    from pipeline.anomaly.subscribe import AlertFilter, follow, format_alert

    settings = _settings()
    if settings.embedded_broker:
        console.print("[red]set KAFKA_BOOTSTRAP_SERVERS[/red] to the broker the workers use")
        raise typer.Exit(2)
    try:
        wanted = AlertFilter(tenant, Severity.parse(severity) if severity else None)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    n = 0
    try:
        for alert in follow(settings.kafka_bootstrap_servers or "", settings.topic("alerts"), wanted,
                            from_beginning=from_beginning, client_config=settings.kafka_client_config()):  # fmt: skip
            print(json.dumps(alert, sort_keys=True) if as_json else format_alert(alert), flush=True)
            n += 1
            if limit and n >= limit:
                break
    except KeyboardInterrupt:
        pass


@app.command()
def evaluate(
    seed: Annotated[int, typer.Option(help="simulator seed")] = 11,
    tenants: Annotated[int, typer.Option()] = 3,
    sites_per_tenant: Annotated[int, typer.Option()] = 6,
    days: Annotated[float, typer.Option(help="days of history (spike needs >= 1 day of intervals)")] = 8.0,
    out: Annotated[str | None, typer.Option(help="write the scores as JSON here")] = None,
) -> None:
    """Precision and recall of every anomaly rule against the simulator's injected faults."""
    from pathlib import Path

    from pipeline.evaluate import run_evaluation

    settings = _settings()
    run_evaluation(settings, seed=seed, tenants=tenants, sites_per_tenant=sites_per_tenant, days=days,
                   console=console, out=Path(out) if out else None)  # fmt: skip
