"""Stage state follows partition ownership: rebuilt when a partition comes back, kept otherwise."""

from __future__ import annotations

import asyncio

import faust
from faust.types import TP

from pipeline.worker.ownership import Ownership

R, S = "meter.readings", "sim.usage"


class Counting:
    """A stage that counts the batches it has seen (its "state")."""

    def __init__(self) -> None:
        self.seen = 0

    def __call__(self, frame: object, now_ms: int) -> dict:
        self.seen += 1
        return {"seen": self.seen}


def test_only_a_partition_that_comes_back_rebuilds_the_stages_of_its_topic() -> None:
    ownership = Ownership()
    readings, sims = ownership.follow(R, Counting), ownership.follow(S, Counting)
    assert readings is not None and sims is not None
    assert ownership.assigned([(R, 0), (R, 1), (S, 0)]) == set()  # the first assignment
    assert readings(None, 0) == {"seen": 1}
    assert ownership.assigned([(R, 0), (R, 1), (S, 0)]) == set()  # a rebalance that changes nothing here
    assert ownership.assigned([(R, 0), (R, 1), (R, 2), (S, 0)]) == set()  # a partition never held: no state
    assert readings(None, 0) == {"seen": 2}
    assert ownership.assigned([(R, 0), (S, 0)]) == set()  # losing one: the state of the others stays
    assert ownership.assigned([(R, 0), (R, 1), (S, 0), ("other", 1)]) == {R}  # R/1 is back
    assert readings(None, 0) == {"seen": 1} and readings.rebuilds == 1  # a new stage, built on the next batch
    assert sims(None, 0) == {"seen": 1} and sims.rebuilds == 0


def test_a_switched_off_stage_is_none() -> None:
    assert Ownership().follow(R, lambda: None) is None


def test_faust_assignment_signal_reaches_the_ownership() -> None:
    app = faust.App("ownership-test", broker="kafka://localhost:1", autodiscover=False)
    ownership = Ownership()
    ownership.connect(app)
    stage = ownership.follow(R, Counting)
    assert stage is not None

    async def rebalance(*tps: TP) -> None:
        await app.on_partitions_assigned.send(set(tps))

    asyncio.run(rebalance(TP(R, 0), TP(R, 1)))
    asyncio.run(rebalance(TP(R, 0)))
    stage(None, 0)
    asyncio.run(rebalance(TP(R, 0), TP(R, 1)))
    stage(None, 0)
    assert stage.rebuilds == 1
