"""ClickHouse access: one client factory, the DDL migrator, and typed helpers."""

from pipeline.storage.client import Database, connect
from pipeline.storage.migrate import applied_migrations, migrate

__all__ = ["Database", "applied_migrations", "connect", "migrate"]
