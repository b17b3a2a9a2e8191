"""Per-series stream state follows partition ownership.

The derive and anomaly stages keep per-series state in memory (a series' last reading and
the totals of its open interval, the fuel tail, the rules' windows) and continue it batch
after batch. That is right only while no other worker writes those series. When a
partition leaves this worker and later comes back, another worker has processed the
readings in between: continuing from the state left behind would restate those intervals
as one long estimated pair, and the gap rule would see a silence that was not there.

:class:`Ownership` follows the assignments Faust reports and finds the partitions that
come *back* (held before, not held just now); every :class:`Rebuildable` stage of such a
topic builds itself anew before its next batch: its state starts empty and the deriver
reads its series back from ClickHouse, as after a restart. Partitions this worker never
held need nothing (it has no state of their series); partitions it keeps need nothing
either. A returning partition drops the state of the whole stage, not only of that
partition's series: state is kept per series, and a rebalance that hands a partition back
is rare (the price is one read-back per series and the rules' warm-up, as at a restart).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

import pyarrow as pa

log = logging.getLogger(__name__)

__all__ = ["Ownership", "Rebuildable", "Stage"]

Stage = Callable[[Any, int], dict[str, pa.Table]]  # a batch's rows and the wall-clock ms -> tables to write


class Rebuildable:
    """``stage``, made by ``factory``; :meth:`invalidate` makes the next call build a new one first.
    Invalidated on the event loop, called in the processing thread."""

    def __init__(self, factory: Callable[[], Stage | None], stage: Stage) -> None:
        self._factory = factory
        self._stage = stage
        self._stale = threading.Event()
        self.rebuilds = 0

    def invalidate(self) -> None:
        self._stale.set()

    def __call__(self, frame: Any, now_ms: int) -> dict[str, pa.Table]:
        if self._stale.is_set():
            self._stale.clear()
            stage = self._factory()
            assert stage is not None, "a stage factory built a stage once: the settings have not changed since"
            self._stage = stage
            self.rebuilds += 1
        return self._stage(frame, now_ms)


class Ownership:
    """The partitions this worker holds, and the stages to rebuild when one of a topic's comes back."""

    def __init__(self) -> None:
        self._held: set[tuple[str, int]] = set()
        self._ever: set[tuple[str, int]] = set()
        self._stages: dict[str, list[Rebuildable]] = {}

    def follow(self, topic: str, factory: Callable[[], Stage | None]) -> Rebuildable | None:
        """A stage of ``topic`` built by ``factory``, rebuilt when a partition of ``topic`` returns
        (None if the factory builds none: the stage is switched off)."""
        first = factory()
        if first is None:
            return None
        stage = Rebuildable(factory, first)
        self._stages.setdefault(topic, []).append(stage)
        return stage

    def assigned(self, assigned: Iterable[tuple[str, int]]) -> set[str]:
        """Faust's new assignment (every partition now held); returns the topics whose stages were
        invalidated because a partition came back."""
        now = {(str(topic), int(partition)) for topic, partition in assigned}
        returned = (now - self._held) & self._ever
        self._held = now
        self._ever |= now
        topics = {topic for topic, _ in returned if topic in self._stages}
        for topic in sorted(topics):
            log.info("partitions of %s came back to this worker: its per-series state starts anew", topic)
            for stage in self._stages[topic]:
                stage.invalidate()
        return topics

    def connect(self, app: Any) -> None:
        """Follow a Faust app's ``on_partitions_assigned`` signal."""

        async def on_assigned(sender: Any, assigned: Iterable[tuple[str, int]], **_: Any) -> None:
            self.assigned(assigned)

        app.on_partitions_assigned.connect(on_assigned)
