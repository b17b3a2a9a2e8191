"""The A/B bench's bookkeeping: turns that alternate, and the figures it quotes."""

from __future__ import annotations

import pytest

from bench.ab import order, summarize


def test_turns_alternate_so_that_drift_falls_on_both_sides() -> None:
    turns = [order(rep) for rep in range(4)]
    assert turns == [("a", "b"), ("b", "a"), ("a", "b"), ("b", "a")]
    firsts = [t[0] for t in turns]
    assert firsts.count("a") == firsts.count("b")


def test_summary_pairs_runs_and_quotes_the_ratio_of_medians() -> None:
    s = summarize([30.0, 40.0, 35.0], [40.0, 50.0, 35.0])
    assert s["a_median"] == 35.0 and s["b_median"] == 40.0
    assert s["a_over_b_median_ratio"] == pytest.approx(35 / 40)
    assert s["paired_a_over_b"] == pytest.approx([0.75, 0.8, 1.0])
    assert s["a_over_b_paired_range"] == pytest.approx([0.75, 1.0])


@pytest.mark.parametrize(("a", "b"), [([], []), ([1.0], [1.0, 2.0])])
def test_summary_refuses_unpaired_runs(a: list[float], b: list[float]) -> None:
    with pytest.raises(ValueError, match="same number of runs"):
        summarize(a, b)
