"""The alerts sink: transitions → the ``alerts`` topic (Avro ``Alert``) and rows for ``alerts_store``.

Key ``tenant|subject|rule`` keeps an episode's transitions in one partition, in order.
Headers let a consumer filter without decoding the value: ``alert.tenant``,
``alert.severity``, ``alert.rule``, ``alert.state``, ``alert.id``, ``alert.subject_type``.
:meth:`AlertPublisher.flush` returns once the broker acknowledged every transition,
so the worker acknowledges its input only after the alerts are out (at-least-once;
``alert_id`` + state identify a duplicate).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa
from confluent_kafka import Producer

from pipeline.anomaly.model import Severity, State, Transition
from pipeline.codecs import Encoder, RecordType
from pipeline.sinks.outbox import Outbox

__all__ = ["ALERTS_SCHEMA", "AlertPublisher", "alert_headers", "alerts_table", "transitions_of"]

_TS = pa.timestamp("ms", tz="UTC")
ALERTS_SCHEMA = pa.schema(
    [
        ("alert_id", pa.string()),
        ("tenant_id", pa.string()),
        ("site_id", pa.string()),
        ("subject_id", pa.string()),
        ("subject_type", pa.string()),
        ("rule", pa.string()),
        ("severity", pa.string()),
        ("state", pa.string()),
        ("first_seen", _TS),
        ("last_seen", _TS),
        ("count", pa.uint32()),
        ("observed", pa.float64()),
        ("threshold", pa.float64()),
        ("message", pa.string()),
        ("attributes", pa.map_(pa.string(), pa.string())),
        ("published_at", _TS),
    ]
)


def alert_headers(t: Transition) -> list[tuple[str, bytes]]:
    return [
        ("alert.tenant", t.tenant_id.encode()),
        ("alert.severity", str(t.severity).encode()),
        ("alert.rule", t.rule.encode()),
        ("alert.state", t.state.value.encode()),
        ("alert.id", t.alert_id.encode()),
        ("alert.subject_type", t.subject_type.encode()),
    ]


_PLAIN = [(f.name, pa.int64()) if f.type == _TS else (f.name, f.type) for f in ALERTS_SCHEMA]
_AS_IS = ("alert_id", "tenant_id", "site_id", "subject_id", "subject_type", "rule", "first_seen", "last_seen",
          "count", "observed", "threshold", "message")  # fmt: skip
_SEVERITY = {str(s): s for s in Severity}
_STATE = {s.value: s for s in State}


def alerts_table(transitions: Iterable[Transition], published_ms: int) -> pa.Table:
    """``alerts_store`` rows of ``transitions``, built column by column (an alert storm is thousands of
    them: ten thousand meters silent at once)."""
    ts = list(transitions)
    cols: dict[str, list[Any]] = {n: [getattr(t, n) for t in ts] for n in _AS_IS}
    cols["severity"] = [str(t.severity) for t in ts]
    cols["state"] = [t.state.value for t in ts]
    cols["attributes"] = [list(t.attributes.items()) for t in ts]
    cols["published_at"] = [published_ms] * len(ts)
    plain = pa.table([pa.array(cols[n], type=typ) for n, typ in _PLAIN], names=[n for n, _ in _PLAIN])
    return plain.cast(ALERTS_SCHEMA)


def transitions_of(table: pa.Table) -> list[Transition]:
    """The transitions of ``alerts_store`` rows (what the runner publishes after a batch)."""
    c = {n: table.column(n).cast(typ).to_pylist() for n, typ in _PLAIN if n != "published_at"}
    return [
        Transition(a, tn, sub, st, rule, _SEVERITY[sev], _STATE[state], site, first, last, count, obs, thr, msg,
                   dict(attrs or ()))
        for a, tn, sub, st, rule, sev, state, site, first, last, count, obs, thr, msg, attrs in zip(
            c["alert_id"], c["tenant_id"], c["subject_id"], c["subject_type"], c["rule"], c["severity"], c["state"],
            c["site_id"], c["first_seen"], c["last_seen"], c["count"], c["observed"], c["threshold"], c["message"],
            c["attributes"], strict=True)
    ]  # fmt: skip


class AlertPublisher:
    """Produce transitions; ``flush`` waits until all are acknowledged (re-sends on failure)."""

    def __init__(self, producer: Producer, topic: str, encoder: Encoder) -> None:
        self._encode = encoder
        self._outbox = Outbox(producer, topic, "alert")
        self.published = 0

    @classmethod
    def create(
        cls, bootstrap: str, topic: str, encoder: Encoder, *, client_config: Mapping[str, str] | None = None
    ) -> AlertPublisher:
        producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "linger.ms": 20,
                "acks": "all",
                "enable.idempotence": False,
                "partitioner": "murmur2_random",
                **(client_config or {}),
            }
        )
        return cls(producer, topic, encoder)

    def add(self, transitions: Iterable[Transition]) -> int:
        n = 0
        for t in transitions:
            self._outbox.send(t.key.encode(), self._encode(RecordType.ALERT, t.record()), alert_headers(t))
            n += 1
        return n

    async def flush(self, *, max_backoff: float = 30.0) -> None:
        self.published += await self._outbox.flush(max_backoff=max_backoff)
