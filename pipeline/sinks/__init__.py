"""Where processed batches go: ClickHouse (Arrow inserts), and Kafka topics through an acknowledged outbox."""

from pipeline.sinks.base import BatchingSink, SinkBatch
from pipeline.sinks.clickhouse import ClickHouseSink
from pipeline.sinks.deadletter import DeadLetterSink, deadletter_headers
from pipeline.sinks.outbox import Outbox

__all__ = ["BatchingSink", "ClickHouseSink", "DeadLetterSink", "Outbox", "SinkBatch", "deadletter_headers"]
