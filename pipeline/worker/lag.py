"""Consumer lag per assigned partition: high watermark minus the next offset to process."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.worker.app import Worker


def update_lag(worker: Worker) -> dict[str, int]:
    consumer = worker.app.consumer
    lags: dict[str, int] = {}
    for tp in consumer.assignment():
        try:
            high = consumer.highwater(tp)
        except Exception:  # partition not fetched yet
            continue
        if high is None:
            continue
        committed = consumer._committed_offset.get(tp)  # faust keeps the last committed offset per partition
        position = (committed + 1) if committed is not None else 0
        lag = max(0, int(high) - position)
        worker.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)
        lags[f"{tp.topic}[{tp.partition}]"] = lag
    return lags
