"""Follow the alerts topic: what ``telemetry alerts tail`` runs, and what an alerting consumer does.

Filtering uses the ``alert.tenant`` / ``alert.severity`` headers only; a value is decoded
(Avro ``Alert``) only for the transitions that pass, as a consumer that cannot read the
schema would still be able to route them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException

from pipeline.anomaly.model import Severity
from pipeline.codecs import Decoder, RecordType, SchemaStore
from pipeline.errors import BrokerError

__all__ = ["AlertFilter", "follow", "format_alert"]


@dataclass(frozen=True, slots=True)
class AlertFilter:
    tenant: str | None = None
    min_severity: Severity | None = None  # this severity and above

    def accepts(self, headers: Mapping[str, bytes]) -> bool:
        if self.tenant is not None and headers.get("alert.tenant", b"").decode() != self.tenant:
            return False
        if self.min_severity is not None:
            try:
                sev = Severity.parse(headers.get("alert.severity", b"").decode())
            except ValueError:
                return False
            return sev >= self.min_severity
        return True


def follow(
    bootstrap: str,
    topic: str,
    wanted: AlertFilter,
    *,
    from_beginning: bool = False,
    client_config: Mapping[str, str] | None = None,
    stop: Callable[[], bool] = lambda: False,
    poll_s: float = 0.5,
) -> Iterator[dict[str, Any]]:
    """Yield decoded transitions that pass ``wanted`` as they arrive (a private group, no commits)."""
    decode = Decoder(SchemaStore.load())
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"alerts-tail-{uuid.uuid4().hex[:12]}",
                         "enable.auto.commit": False, **(client_config or {}),
                         "auto.offset.reset": "earliest" if from_beginning else "latest"})  # fmt: skip
    try:
        consumer.subscribe([topic])
        while not stop():
            msg = consumer.poll(poll_s)
            if msg is None:
                continue
            if msg.error():
                if msg.error().fatal():
                    raise BrokerError(f"alerts consumer: {msg.error()}")
                continue
            headers = {k: v or b"" for k, v in (msg.headers() or [])}
            if not wanted.accepts(headers):
                continue
            rtype, record = decode(msg.value())
            if rtype is RecordType.ALERT:
                yield record
    except KafkaException as exc:
        raise BrokerError(f"alerts consumer: {exc}") from exc
    finally:
        consumer.close()


def format_alert(a: Mapping[str, Any]) -> str:
    from datetime import UTC, datetime

    def ts(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")

    attrs = " ".join(f"{k}={v}" for k, v in sorted((a.get("attributes") or {}).items()))
    return (f"{a['state']:<8} {a['severity']:<8} {a['tenant_id']} {a['subject_type']}:{a['subject_id']} "
            f"{a['rule']} since {ts(a['first_seen'])} last {ts(a['last_seen'])} x{a['count']} "
            f"{a['message']} {attrs} [{a['alert_id']}]").rstrip()  # fmt: skip
