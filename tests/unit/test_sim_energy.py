"""The simulator's consumption ground truth by hand: rollover undone, reset step uncounted, gap and split days."""

from __future__ import annotations

import pytest

from pipeline.simulate.config import DAY_MS
from pipeline.simulate.energy import RegisterSeries, daily_advance

H = 3_600_000
D0 = 20_000 * DAY_MS  # a UTC midnight


def _series(values: list[float], *, sent: list[bool] | None = None, **fault: object) -> RegisterSeries:
    ts = tuple(D0 + 22 * H + i * H for i in range(len(values)))  # hourly from 22:00: two samples on day 0
    return RegisterSeries("d", "t", "q", ts, tuple(values), tuple(sent or [True] * len(values)), **fault)  # type: ignore[arg-type]


def _days(rows: list[dict[str, object]]) -> list[tuple[object, ...]]:
    return [(r["day"], r["advance"], r["uncounted"], r["gap"], r["split"]) for r in rows]


def test_a_rollover_is_undone_with_the_ceiling() -> None:
    s = _series([990.0, 995.0, 3.0, 10.0], fault="rollover", fault_ts=D0 + 24 * H, ceiling=1000.0)
    assert _days(daily_advance([s], set())) == [("2024-10-04", 5.0 + 8.0, 0.0, False, False),
                                                ("2024-10-05", 7.0, 0.0, False, False)]  # fmt: skip


def test_a_reset_step_advances_by_the_new_value_which_the_rules_do_not_count() -> None:
    s = _series([500.0, 510.0, 4.0, 9.0], fault="reset", fault_ts=D0 + 24 * H)
    rows = daily_advance([s], set())
    assert _days(rows) == [("2024-10-04", 10.0 + 4.0, 4.0, False, False), ("2024-10-05", 5.0, 0.0, False, False)]


def test_gap_and_split_days_are_marked() -> None:
    s = _series([1.0, 2.0, 3.0, 4.0, 5.0], sent=[True, True, True, False, True])  # 01:00 on day 1 never sent
    assert [(r["gap"], r["split"]) for r in daily_advance([s], set())] == [(False, False), (True, False)]
    midnight = D0 + DAY_MS
    assert [(r["gap"], r["split"]) for r in daily_advance([_series([1.0, 2.0, 3.0, 4.0])], {("d", "q", midnight)})] == [
        (False, True),
        (False, True),
    ]
    assert sum(r["advance"] for r in daily_advance([_series([1.0, 2.5, 3.0, 4.0])], set())) == pytest.approx(3.0)  # type: ignore[misc]


def test_a_refused_sample_at_either_end_leaves_its_step_unmeasured() -> None:
    s = _series([1.0, 2.0, 4.0, 7.0, 11.0])  # 22:00, 23:00 on day 0; 00:00, 01:00, 02:00 on day 1
    whole = [("2024-10-04", 1.0 + 2.0, 0.0, False, False), ("2024-10-05", 3.0 + 4.0, 0.0, False, False)]
    assert _days(daily_advance([s], {("d", "q", s.ts[3])})) == whole  # inside: its neighbours span it
    assert _days(daily_advance([s], {("d", "q", s.ts[-1])})) == [whole[0], ("2024-10-05", 3.0, 0.0, False, False)]
    assert _days(daily_advance([s], {("d", "q", s.ts[0])})) == [("2024-10-04", 2.0, 0.0, False, False), whole[1]]
