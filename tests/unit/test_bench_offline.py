"""The in-process A/B of the processing stage (``python -m bench.offline``) times what the worker runs.

Not a performance test: it checks that both configurations process the same workload into the
same readings, and that the batches are cut as the worker cuts them.
"""

from __future__ import annotations

from bench import workload as W
from bench.offline import batches, compare
from pipeline.envelope import RawMessage
from pipeline.settings import Settings


def test_batches_are_cut_by_count_and_by_bytes() -> None:
    msgs = [RawMessage("t", 0, i, None, b"x" * 10) for i in range(7)]
    assert [len(b) for b in batches(msgs, max_messages=3)] == [3, 3, 1]
    assert [len(b) for b in batches(msgs, max_messages=100, max_bytes=25)] == [2, 2, 2, 1]
    assert [len(b) for b in batches(msgs[:1], max_messages=100, max_bytes=5)] == [1]  # an oversized one still goes


def test_both_configurations_write_every_reading() -> None:
    r = compare(Settings(), W.SINGLES, devices=40, polls=3, rounds=1, warmup=1, max_messages=40)
    assert (r["batches"], r["timed_batches"]) == (3, 2)
    assert r["readings_store_rows"] == {"alerts_off": 40 * 3 * 8, "alerts_on": 40 * 3 * 8}
    assert all(v > 0 for v in [*r["cpu_seconds"].values(), *r["wall_seconds"].values()])
    r = compare(Settings(), W.BATCHES, devices=1000, polls=2, rounds=1, warmup=1, max_messages=2)  # 2 gateway msgs
    assert (r["batches"], r["readings_store_rows"]["alerts_on"]) == (2, 1000 * 2 * 8)
