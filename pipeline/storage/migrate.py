"""Apply the ordered, idempotent DDL files in ``sql/`` and record them.

Files are named ``NNN_name.sql`` and applied in order; ``{db}`` is replaced
with the database name. Each applied file is recorded with its checksum in
``schema_migrations``; a file whose checksum changed after it was applied is
an error (write a new file instead of editing an applied one). Every statement
is written with ``IF NOT EXISTS`` so that re-applying is harmless.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import MigrationError, StorageError
from pipeline.resources import sql_dir
from pipeline.storage.client import Database

_NAME = re.compile(r"^\d{3}_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]

    def statements(self, database: str) -> list[str]:
        body = "\n".join(line for line in self.sql.splitlines() if not line.strip().startswith("--"))
        return [s.strip().replace("{db}", database) for s in body.split(";") if s.strip()]


def load_migrations(directory: Path | None = None) -> list[Migration]:
    directory = directory or sql_dir()
    files = sorted(p for p in directory.glob("*.sql") if _NAME.match(p.name))
    return [Migration(p.name, p.read_text(encoding="utf-8")) for p in files]


def applied_migrations(db: Database) -> dict[str, str]:
    try:
        _, rows = db.query_rows(
            f"SELECT name, argMax(checksum, applied_at) FROM {db.table('schema_migrations')} GROUP BY name"
        )
    except StorageError:
        return {}
    return {str(name): str(checksum) for name, checksum in rows}


def migrate(db: Database, directory: Path | None = None) -> list[str]:
    """Apply every file not yet applied; return the names applied now."""
    done = applied_migrations(db)
    applied: list[str] = []
    for m in load_migrations(directory):
        if m.name in done:
            if done[m.name] != m.checksum:
                raise MigrationError(
                    f"{m.name} changed after it was applied (checksum {done[m.name]} → {m.checksum}); "
                    "add a new migration file instead of editing an applied one"
                )
            continue
        for statement in m.statements(db.name):
            try:
                db.command(statement)
            except StorageError as exc:
                raise MigrationError(f"{m.name}: {exc}", code=exc.code) from exc
        db.command(f"INSERT INTO {db.table('schema_migrations')} (name, checksum) VALUES ('{m.name}', '{m.checksum}')")
        applied.append(m.name)
    return applied
