"""Kafka plumbing: the embedded Tansu broker and topic administration."""

from pipeline.broker.admin import TOPICS, ensure_topics
from pipeline.broker.embedded import EmbeddedBroker, embedded_broker, resolve_bootstrap

__all__ = ["TOPICS", "EmbeddedBroker", "embedded_broker", "ensure_topics", "resolve_bootstrap"]
