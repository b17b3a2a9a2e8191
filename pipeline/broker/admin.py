"""Create the pipeline's topics (idempotently) with confluent-kafka's AdminClient."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from pipeline.errors import BrokerError

# topic suffix → extra topic config
TOPICS: dict[str, dict[str, str]] = {
    "meter.readings": {},
    "meter.frames": {},
    "sim.usage": {},
    "registry.devices": {"cleanup.policy": "compact"},
    "privacy.erasures": {"cleanup.policy": "compact"},
    "alerts": {},
    "deadletter": {},
}


def ensure_topics(
    bootstrap: str,
    prefix: str,
    partitions: int,
    *,
    names: Iterable[str] | None = None,
    client_config: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> list[str]:
    """Create missing topics; return the full names. Existing topics are left as they are."""
    admin = AdminClient({"bootstrap.servers": bootstrap, **(client_config or {})})
    wanted = {f"{prefix}{n}": TOPICS.get(n, {}) for n in (names or TOPICS)}
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise BrokerError(f"cannot list topics on {bootstrap}: {exc}") from exc
    new = [
        NewTopic(name, num_partitions=partitions, replication_factor=1, config=dict(cfg))
        for name, cfg in wanted.items()
        if name not in existing
    ]
    if new:
        for name, fut in admin.create_topics(new, operation_timeout=timeout).items():
            try:
                fut.result(timeout)
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise BrokerError(f"cannot create topic {name}: {exc}") from exc
    return sorted(wanted)
