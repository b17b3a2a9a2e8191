"""HTTP endpoints on the worker's web port: Prometheus metrics, health, status and read-only SQL.

``/query`` exists because chDB allows one process per data directory: while the
worker runs, ``telemetry query`` sends its SQL here instead of opening the files.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import re
from typing import TYPE_CHECKING, Any

from faust import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pipeline.errors import StorageError

if TYPE_CHECKING:
    from pipeline.worker.app import Worker

_READ_ONLY = re.compile(r"^\s*(SELECT|WITH|SHOW|DESCRIBE|DESC|EXPLAIN|EXISTS)\b", re.IGNORECASE)
MAX_QUERY_ROWS = 10_000  # default cap of /query results
HARD_MAX_QUERY_ROWS = 2_000_000


def _jsonable(v: Any) -> Any:
    if isinstance(v, dt.datetime):
        return (v if v.tzinfo else v.replace(tzinfo=dt.UTC)).isoformat()
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return v


def run_readonly_query(worker: Worker, sql: str, max_rows: int = MAX_QUERY_ROWS) -> dict[str, Any]:
    if not _READ_ONLY.match(sql):
        raise StorageError("only read-only statements (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN) are accepted")
    worker.db.command(f"USE {worker.db.name}")
    columns, rows = worker.db.query_rows(sql)
    max_rows = max(1, min(max_rows, HARD_MAX_QUERY_ROWS))
    return {
        "columns": columns,
        "rows": [[_jsonable(v) for v in row] for row in rows[:max_rows]],
        "truncated": len(rows) > max_rows,
    }


def status(worker: Worker) -> dict[str, Any]:
    app = worker.app
    assignment = sorted(f"{tp.topic}[{tp.partition}]" for tp in app.consumer.assignment()) if app.consumer else []
    return {
        "ready": bool(app.rebalancing is False and assignment),
        "processed": {name: r.processed_messages for name, r in worker.runners.items()},
        "registry_subjects": len(worker.registry),
        "assignment": assignment,
    }


def install_views(worker: Worker) -> None:
    app = worker.app

    @app.page("/metrics")
    async def metrics(self: web.View, request: web.Request) -> web.Response:
        worker.metrics.registry_size.set(len(worker.registry))
        # aiohttp wants the charset apart from the media type; the exposition format is text/plain 0.0.4
        return self.bytes(generate_latest(worker.metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/health")
    async def health(self: web.View, request: web.Request) -> web.Response:
        s = status(worker)
        return self.json({"status": "ok" if s["ready"] else "starting", **s}, status=200 if s["ready"] else 503)

    @app.page("/status")
    async def status_view(self: web.View, request: web.Request) -> web.Response:
        return self.json(status(worker))

    @app.page("/query")
    class QueryView(web.View):
        async def get(self, request: web.Request) -> web.Response:
            return await self._run(request.query.get("sql", ""), int(request.query.get("max_rows", MAX_QUERY_ROWS)))

        async def post(self, request: web.Request) -> web.Response:
            body = await request.json()
            return await self._run(str(body.get("sql", "")), int(body.get("max_rows", MAX_QUERY_ROWS)))

        async def _run(self, sql: str, max_rows: int) -> web.Response:
            try:
                result = await asyncio.to_thread(run_readonly_query, worker, sql, max_rows)
            except StorageError as exc:
                return self.json({"error": str(exc), "code": exc.code}, status=400)
            return self.json(result)
