"""Fixtures: one real embedded broker per test session; per-test topic prefix, group and database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.broker import EmbeddedBroker, ensure_topics
from tests.support import WorkerProcess, unique


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_path=log) as b:
        yield b


class Env:
    """One isolated pipeline deployment on the shared broker: own topics, group and database."""

    def __init__(self, broker: EmbeddedBroker, tmp_path: Path) -> None:
        self.broker = broker
        self.bootstrap = broker.bootstrap
        self.prefix = unique("t") + "."
        self.group = unique("g")
        self.database = unique("db_")
        self.tmp_path = tmp_path
        self.ch_path = tmp_path / "clickhouse"
        ensure_topics(self.bootstrap, self.prefix, 4)

    def topic(self, name: str) -> str:
        return self.prefix + name

    def worker_env(self, **extra: str) -> dict[str, str]:
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "TOPIC_PREFIX": self.prefix,
            "CONSUMER_GROUP": self.group,
            "CLICKHOUSE_URL": f"chdb://{self.ch_path}?database={self.database}",
            "DATA_DIR": str(self.tmp_path / "data"),
            "BATCH_MAX_SECONDS": "0.3",
            **extra,
        }

    def worker(self, **extra: str) -> WorkerProcess:
        n = len(list(self.tmp_path.glob("worker-*.log")))
        return WorkerProcess(self.worker_env(**extra), self.tmp_path / f"worker-{n}.log")


@pytest.fixture
def env(broker: EmbeddedBroker, tmp_path: Path) -> Env:
    return Env(broker, tmp_path)


@pytest.fixture
def worker(env: Env) -> Iterator[WorkerProcess]:
    w = env.worker().start()
    yield w
    w.stop()


@pytest.fixture(scope="session")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one chDB data directory this test process may open (chDB allows one per process)."""
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture
def database(chdb_dir: Path) -> Iterator[object]:
    """A fresh database in the session's chDB, migrated, dropped afterwards."""
    from pipeline.settings import ClickHouseTarget
    from pipeline.storage import connect, migrate

    db = connect(ClickHouseTarget(f"chdb://{chdb_dir}?database={unique('u_')}"))
    migrate(db)
    yield db
    db.command(f"DROP DATABASE IF EXISTS {db.name}")
