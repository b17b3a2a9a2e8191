"""Where processed batches go: ClickHouse (Arrow inserts) and the dead-letter topic."""

from pipeline.sinks.base import BatchingSink, SinkBatch
from pipeline.sinks.clickhouse import ClickHouseSink
from pipeline.sinks.deadletter import DeadLetterSink, deadletter_headers

__all__ = ["BatchingSink", "ClickHouseSink", "DeadLetterSink", "SinkBatch", "deadletter_headers"]
