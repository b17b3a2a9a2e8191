"""All Prometheus metrics of the worker in one typed holder.

Built against a passed-in registry (each test gets its own). Hot-path code
updates metrics once per batch, through label children bound in advance.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    consumed: Counter
    accepted: Counter
    rejected: Counter
    duplicates: Counter
    rows_written: Counter
    sink_latency: Histogram
    sink_retries: Counter
    batch_latency: Histogram
    consumer_lag: Gauge
    registry_size: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> Metrics:
        r = registry if registry is not None else CollectorRegistry()
        return cls(
            registry=r,
            consumed=Counter("telemetry_records_consumed", "Kafka messages consumed", ["topic"], registry=r),
            accepted=Counter(
                "telemetry_records_accepted", "Records accepted (rows for ClickHouse)", ["topic"], registry=r
            ),
            rejected=Counter(
                "telemetry_records_rejected", "Records sent to the dead-letter topic", ["topic", "reason"], registry=r
            ),
            duplicates=Counter("telemetry_duplicates_dropped", "Exact duplicate values dropped", ["topic"], registry=r),
            rows_written=Counter("telemetry_rows_written", "Rows inserted into ClickHouse", ["table"], registry=r),
            sink_latency=Histogram(
                "telemetry_sink_batch_seconds",
                "Time to insert one batch into ClickHouse",
                ["table"],
                buckets=_LATENCY_BUCKETS,
                registry=r,
            ),
            sink_retries=Counter(
                "telemetry_sink_retries",
                "ClickHouse insert attempts that failed and were retried",
                ["table"],
                registry=r,
            ),
            batch_latency=Histogram(
                "telemetry_batch_seconds",
                "Time to process one consumed batch end to end",
                ["topic"],
                buckets=_LATENCY_BUCKETS,
                registry=r,
            ),
            consumer_lag=Gauge(
                "telemetry_consumer_lag", "Messages behind the high watermark", ["topic", "partition"], registry=r
            ),
            registry_size=Gauge("telemetry_registry_subjects", "Subjects in the device registry", registry=r),
        )
