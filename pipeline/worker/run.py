"""Start a worker: broker (embedded if none configured), topics, ClickHouse schema, Faust."""

from __future__ import annotations

import logging
from collections.abc import Callable

import faust

from pipeline.broker import ensure_topics, resolve_bootstrap
from pipeline.catalogue import load_catalogue
from pipeline.metrics import Metrics
from pipeline.settings import Settings
from pipeline.storage import connect, migrate

log = logging.getLogger(__name__)


def run_worker(settings: Settings, *, announce: Callable[[str], None] = print) -> None:
    """Run until interrupted (SIGINT/SIGTERM). Offsets of unfinished batches are not committed."""
    from pipeline.worker.app import build_worker
    from pipeline.worker.lag import update_lag

    catalogue = load_catalogue()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with resolve_bootstrap(settings.kafka_bootstrap_servers, log_path=settings.data_dir / "broker.log") as bootstrap:
        ensure_topics(
            bootstrap, settings.topic_prefix, settings.topic_partitions, client_config=settings.kafka_client_config()
        )
        db = connect(settings.clickhouse)
        applied = migrate(db)
        if applied:
            announce(f"applied migrations: {', '.join(applied)}")
        worker = build_worker(settings, bootstrap, db, catalogue, Metrics.create())

        @worker.app.timer(5.0)
        async def _lag() -> None:
            update_lag(worker)

        announce(
            f"worker: kafka {bootstrap}, clickhouse {settings.clickhouse.redacted()}, "
            f"http://{settings.web_host}:{settings.web_port}/metrics"
        )
        try:
            faust.Worker(
                worker.app, loglevel=settings.log_level, quiet=True, override_logging=True
            ).execute_from_commandline()
        finally:
            db.close()
