"""The per-series state of the meter rules against naive recomputations over whole series."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.anomaly.interval_history import DAY_SLOTS, IntervalHistory
from pipeline.anomaly.numbering import SID, KeyRows
from pipeline.anomaly.series_state import SeriesRing, WindowAcc, same_reading

TOL = 0.5


def _number(col: str) -> pl.Expr:
    """Series numbers as the stage's numbering gives them: b first, so numbers differ from name order."""
    return pl.col(col).replace_strict({"b": 0, "c": 1, "a": 2}, return_dtype=pl.Int64)


def _naive(samples: list[tuple[str, int, float]], n: int) -> dict[tuple[str, int], tuple[float, float, float]]:
    """(series, ts) -> (max, min of the sample and the n - 1 before it, distance to the one before)."""
    out, by = {}, {}
    for s, ts, v in sorted(samples, key=lambda x: (x[0], x[1])):
        hist = by.setdefault(s, [])
        hist.append(v)
        if len(hist) >= n:
            win = hist[-n:]
            out[(s, ts)] = (max(win), min(win), abs(hist[-1] - hist[-2]) if len(hist) > 1 else 0.0)
    return out


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 60), st.sampled_from([0.0, 0.2, 1.0, 5.0])),
             min_size=1, max_size=120, unique_by=lambda x: (x[0], x[1])),
    st.integers(2, 6), st.integers(1, 40), st.booleans(), st.booleans(),
)  # fmt: skip
def test_ring_windows_equal_a_recomputation_over_the_whole_series(samples, n, size, mixed, tol) -> None:
    """Samples arrive in time order per series (rules skip older ones), batched at random; with ``tol``
    a sample far from its predecessor need only be known not to be within ``tol``."""
    samples = sorted(samples, key=lambda x: x[1])
    ring = SeriesRing(n - 1)
    got = {}
    for i in range(0, len(samples), size):
        part = samples[i : i + size]
        frame = pl.DataFrame(part, schema={"s": pl.Utf8, "ts_ms": pl.Int64, "value": pl.Float64}, orient="row")
        # "mixed": series c uses a shorter window (as a per-tenant override would), so windows differ per row
        frame = frame.with_columns(n=pl.when(pl.col("s") == "c").then(pl.lit(2 if mixed else n)).otherwise(n),
                                   **{SID: _number("s")})  # fmt: skip
        ids, ts, vals, each = (frame[c].to_numpy() for c in (SID, "ts_ms", "value", "n"))
        at, hi, lo = ring.roll(ids, ts, vals, each if mixed else n, tol=TOL if tol else None)  # per sample or one
        rows = frame[at]
        got.update({(s, t): (h, lw) for s, t, h, lw in zip(rows["s"], rows["ts_ms"], hi, lo, strict=True)})
    want = {**_naive([x for x in samples if x[0] != "c"], n), **_naive([x for x in samples if x[0] == "c"],
                                                                        2 if mixed else n)}  # fmt: skip
    assert {k for k, (h, _) in got.items() if not np.isnan(h)} == set(want)
    for key, (h, lw, step) in want.items():
        if tol and step > TOL:
            assert got[key][0] - got[key][1] > TOL  # known not stuck
        else:
            assert got[key] == (h, lw)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 80), st.integers(0, 9)), min_size=1, max_size=150,
             unique_by=lambda x: (x[0], x[1])),
    st.integers(1, 50), st.booleans(),
)  # fmt: skip
def test_window_sums_equal_a_recomputation_over_the_whole_series(samples, size, shuffled) -> None:
    """Every window of 10 ms is returned once, complete (a later reading of its series in a later window
    was seen), with the sum and count of its readings; batches are cut at random, and with ``shuffled``
    a batch's rows come in any order (series interleaved, time ascending within a series). Every batch is
    delivered twice; the second time adds nothing."""
    samples = sorted(samples, key=lambda x: x[1])
    acc = WindowAcc(["v", "n"], ["s"])
    got = []
    for i in range(0, len(samples), size):
        part = samples[i : i + size]
        if shuffled:
            part = sorted(part, key=lambda x: ("cab".index(x[0]), x[1]))
        frame = pl.DataFrame(part, schema={"s": pl.Utf8, "ts_ms": pl.Int64, "v": pl.Float64}, orient="row")
        frame = frame.with_columns(width_ms=pl.lit(10, pl.Int64), n=pl.lit(1.0), **{SID: _number("s")})
        got.extend(acc.add(frame).select("s", "window_ms", "v", "n").iter_rows())
        assert acc.add(frame).is_empty()  # delivered again: nothing is newer than what was seen
    want = []
    for s in "abc":
        mine = [(t, v) for x, t, v in samples if x == s]
        windows = sorted({t // 10 * 10 for t, _ in mine})
        for w in windows[:-1]:  # the newest window of a series is still open
            vals = [v for t, v in mine if t // 10 * 10 == w]
            want.append((s, w, float(sum(vals)), float(len(vals))))
    assert sorted(got) == sorted(want)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.integers(0, 300), max_size=60), min_size=1, max_size=12), st.sampled_from([4, 16, 4096]))
def test_key_rows_number_keys_in_order_of_first_sight_across_batches(batches: list[list[int]], merge_at: int) -> None:
    """Rows are those of a dict filled in first-seen order, across the small table's merges into the main one."""
    index, want = KeyRows(merge_at), {}
    for batch in batches:
        keys = np.array(batch, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)  # spread like hashes
        got = index.rows(keys)
        for k in keys.tolist():
            want.setdefault(k, len(want))
        assert got.tolist() == [want[k] for k in keys.tolist()] and len(index) == len(want)


@pytest.mark.parametrize("block", [1 << 14, 64])
def test_interval_history_keeps_its_values_as_it_grows_and_widens(block: int) -> None:
    """Rings made in two growth steps (within one block, and across several), then a window widened past
    8 days: every stored interval is found again at its number (and only there), through take, numbers and
    values alike."""
    hist = IntervalHistory(block)
    first = hist.rings(hist.rows(np.arange(100)))
    n = 1_000_000 + np.arange(100) * 7
    x = np.arange(100, dtype=np.float32) + 0.5
    hist.put(first, n, x)
    second = hist.rings(hist.rows(np.arange(100, 400)))
    hist.put(second[:1], n[:1], np.array([np.nan], np.float32))  # nothing usable: not stored
    hist.ensure_slots(10.0)
    assert hist.slots == 11 * DAY_SLOTS
    assert np.array_equal(hist.take(first, n[:, None])[:, 0], x)
    assert np.isnan(hist.take(first, n[:, None] + hist.slots)).all()  # same slot, another interval
    assert np.isnan(hist.take(second, np.full((300, 1), n[0]))).all()  # new rings, and the NaN not stored
    nums, vals = hist.numbers(first), hist.values(first)
    assert [sorted(set(r[r >= 0].tolist())) for r in nums] == [[k] for k in n.tolist()]
    assert np.array_equal(vals[nums == n[:, None]], x)
    both = np.r_[second[150:], first[::-1]]  # rings of several blocks, out of order
    later = n[0] + 3 * DAY_SLOTS + np.arange(len(both))[::-1] * 5  # other slots than n's
    hist.put(both, later, np.arange(len(both), dtype=np.float32))
    assert np.array_equal(hist.take(both, later[:, None])[:, 0], np.arange(len(both), dtype=np.float32))
    assert np.array_equal(hist.take(first, n[:, None])[:, 0], x)  # other slots of the same rings are kept
    assert (hist.numbers(both) == later[:, None]).sum(axis=1).tolist() == [1] * len(both)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4)), min_size=1, max_size=40), st.booleans())
def test_same_reading_finds_the_first_row_of_the_same_device_and_time(rows: list[tuple[int, int]], huge: bool) -> None:
    """Against a scan; ``huge`` device numbers take the join that does not fit an int64 key."""
    device = np.array([d for d, _ in rows], np.int64) + (2**61 if huge else 0)
    ts = np.array([1_700_000_000_000 + t * 60_000 for _, t in rows], np.int64)
    src, dst = np.arange(0, len(rows), 2), np.arange(len(rows))
    want = [next((s for s in src.tolist() if (device[s], ts[s]) == (device[d], ts[d])), -1) for d in dst.tolist()]
    assert same_reading(device, ts, src, dst).tolist() == want
