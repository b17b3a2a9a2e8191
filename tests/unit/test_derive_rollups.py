"""Rollups (hourly UTC, daily local), generator fuel and SIM usage rollups: pure functions of record sets."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime

import polars as pl
import pytest

from pipeline.derive.fuel import fuel_intervals, generator_intervals
from pipeline.derive.rollups import consumption_rollup, instantaneous_intervals, instantaneous_rollup
from pipeline.derive.sim import sim_cycles, sim_daily, tenant_sim_daily
from pipeline.flags import Flag

M = 60_000
H = 3_600_000


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def intervals(rows):
    cols = ["tenant_id", "site_id", "device_id", "role", "timezone", "quantity", "interval_start_ms", "measured",
            "estimated", "flags"]  # fmt: skip
    return pl.DataFrame(rows, schema=cols, orient="row").with_columns(pl.col("flags").cast(pl.UInt32))


# -- consumption ------------------------------------------------------------------------------------------
def test_daily_rollups_follow_the_registry_time_zone_and_skip_sub_meters_for_sites():
    q, kol = "active_energy_import", "Asia/Kolkata"  # UTC+5:30: local midnight is 18:30 UTC
    iv = intervals([
        ("t", "s1", "main", "main", kol, q, ms(2026, 3, 1, 18, 15), 100.0, 0.0, 0),   # 23:45 IST, Mar 1
        ("t", "s1", "main", "main", kol, q, ms(2026, 3, 1, 18, 30), 50.0, 10.0, int(Flag.ESTIMATED)),  # 00:00 Mar 2
        ("t", "s1", "sub", "sub", kol, q, ms(2026, 3, 1, 18, 15), 40.0, 0.0, 0),
        ("t", "s2", "other", "", "UTC", q, ms(2026, 3, 1, 18, 15), 7.0, 0.0, int(Flag.RESET)),  # Mar 1 in UTC
    ])  # fmt: skip
    dev = consumption_rollup(iv, period="day", level="device")
    got = {(r["device_id"], r["day"]): (r["measured"], r["estimated"]) for r in dev.iter_rows(named=True)}
    assert got == {("main", date(2026, 3, 1)): (100.0, 0.0), ("main", date(2026, 3, 2)): (50.0, 10.0),
                   ("sub", date(2026, 3, 1)): (40.0, 0.0), ("other", date(2026, 3, 1)): (7.0, 0.0)}  # fmt: skip
    site = consumption_rollup(iv, period="day", level="site")
    assert site.filter(pl.col("site_id") == "s1")["total"].to_list() == [100.0, 60.0]  # the sub-meter is inside main
    tenant = consumption_rollup(iv, period="day", level="tenant")
    assert tenant["measured"].to_list() == [107.0, 50.0] and tenant["estimated_intervals"].to_list() == [0, 1]
    assert tenant["flags"].to_list() == [int(Flag.RESET), int(Flag.ESTIMATED)]
    hourly = consumption_rollup(iv, period="hour", level="tenant")  # hours are UTC: both in 18:00
    assert hourly["hour"].to_list() == [datetime(2026, 3, 1, 18, tzinfo=UTC)]
    assert hourly["measured"].to_list() == [157.0] and hourly["estimated"].to_list() == [10.0]
    assert hourly["intervals"].to_list() == [3]


def test_hourly_and_daily_sums_equal_the_interval_sums():
    rnd = random.Random(3)
    rows = []
    for d, tz in (("a", "Europe/Berlin"), ("b", "America/New_York"), ("c", "Asia/Kathmandu")):
        for k in range(rnd.randint(50, 400)):
            rows.append(("t", "s", d, "", tz, "q", ms(2026, 3, 28) + k * 900_000, rnd.uniform(0, 100),
                         rnd.choice([0.0, 0.0, rnd.uniform(0, 5)]), 0))  # fmt: skip
    iv = intervals(rows)
    total = iv.group_by("device_id").agg(pl.col("measured").sum(), pl.col("estimated").sum()).sort("device_id")
    for period in ("hour", "day"):
        r = consumption_rollup(iv, period=period, level="device").group_by("device_id").agg(
            pl.col("measured").sum(), pl.col("estimated").sum()).sort("device_id")  # fmt: skip
        assert r["measured"].to_list() == pytest.approx(total["measured"].to_list())
        assert r["estimated"].to_list() == pytest.approx(total["estimated"].to_list())


def test_cost_is_summed_within_one_currency_only():
    iv = intervals(
        [
            ("t", "s1", "a", "", "UTC", "q", 0, 1000.0, 0.0, 0),
            ("t", "s2", "b", "", "UTC", "q", 0, 1000.0, 0.0, 0),
            ("t", "s2", "c", "", "UTC", "q", 0, 5.0, 0.0, 0),
        ]
    )
    iv = iv.with_columns(cost=pl.Series([0.3, 6.0, None]), currency=pl.Series(["EUR", "INR", None]))
    site = consumption_rollup(iv, period="day", level="site")
    assert site["cost"].to_list() == [0.3, 6.0] and site["currency"].to_list() == ["EUR", "INR"]
    tenant = consumption_rollup(iv, period="day", level="tenant")
    assert tenant["cost"].to_list() == [None] and tenant["currency"].to_list() == ["MIXED"]


def test_instantaneous_min_avg_max_with_duplicates_ignored():
    base = ms(2026, 1, 5, 10)
    readings = pl.DataFrame(
        [("t", "s", "m1", "voltage_l1", base, 230.0), ("t", "s", "m1", "voltage_l1", base + 5 * M, 232.0),
         ("t", "s", "m1", "voltage_l1", base + 5 * M, 999.0),  # same key again: the first wins
         ("t", "s", "m1", "voltage_l1", base + 50 * M, 226.0), ("t", "s", "m2", "voltage_l1", base, 240.0)],
        schema=["tenant_id", "site_id", "device_id", "quantity", "ts_ms", "value"], orient="row")  # fmt: skip
    stats = instantaneous_intervals(readings)
    assert stats.filter(pl.col("device_id") == "m1")["n"].to_list() == [2, 1]
    dev = instantaneous_rollup(readings, period="hour", level="device")
    assert dev.select("device_id", "min", "avg", "max", "n").rows() == [("m1", 226.0, (230 + 232 + 226) / 3, 232.0, 3),
                                                                         ("m2", 240.0, 240.0, 240.0, 1)]  # fmt: skip
    site = instantaneous_rollup(stats, period="day", level="site")
    assert site.select("min", "avg", "max", "n").rows() == [(226.0, 232.0, 240.0, 4)]


# -- fuel -------------------------------------------------------------------------------------------------
def frame(rows):
    return pl.DataFrame(rows, schema={"ts_ms": pl.Int64, "value": pl.Float64}, orient="row")


def test_fuel_used_refuels_and_unexplained_drops_by_hand():
    # 5-minute samples: running 00:05–00:10 (2 L per sample), stopped after; refuel at 00:20; theft 00:30–00:35
    levels = frame([(0, 100.0), (5 * M, 98.0), (10 * M, 96.0), (15 * M, 96.1), (20 * M, 150.0), (25 * M, 150.0),
                    (30 * M, 147.5), (35 * M, 145.0)])  # fmt: skip
    states = frame([(0, 0.0), (5 * M, 1.0), (10 * M, 1.0), (15 * M, 0.0)])  # last known state holds
    runtime = frame([(0, 1000.0), (5 * M, 1300.0), (10 * M, 1600.0), (15 * M, 1600.0), (35 * M, 1600.0)])
    res = generator_intervals(levels, states, runtime)
    rows = res.intervals.select("interval_start_ms", "used_l", "refuel_l", "unexplained_drop_l", "runtime_s").rows()
    # [00:00, 00:15): used 2 + 2, the +0.1 L while stopped is noise (not a refuel, no negative use)
    # [00:15, 00:30): refuel 96.1 -> 150 = 53.9 L, then 150 -> 147.5 while stopped (00:25–00:30) = 2.5 L unexplained
    # [00:30, 00:45): 147.5 -> 145 while stopped = 2.5 L unexplained
    want = [(0, 4.0, 0.0, 0.0, 600.0), (15 * M, 0.0, 53.9, 2.5, 0.0), (30 * M, 0.0, 0.0, 2.5, 0.0)]
    assert len(rows) == len(want) and all(r == pytest.approx(w) for r, w in zip(rows, want, strict=True))
    assert res.refuels.select("ts_ms", "litres").rows() == [(20 * M, pytest.approx(53.9))]


def test_fuel_is_a_function_of_the_sample_set_and_noise_is_not_use():
    rnd = random.Random(9)
    true_level, lv, stt, burnt = 400.0, [], [], 0.0
    for k in range(300):
        run = 100 <= k < 160
        if run:
            true_level -= 1.5
            burnt += 1.5
        lv.append((k * 5 * M, round(true_level + rnd.gauss(0, 0.08), 1)))
        stt.append((k * 5 * M, 1.0 if run else 0.0))
    one = fuel_intervals(frame(lv), frame(stt))
    rnd.shuffle(lv)
    rnd.shuffle(stt)
    two = fuel_intervals(frame(lv + lv[:20]), frame(stt))  # shuffled, with duplicates
    assert one.intervals.equals(two.intervals) and one.refuels.is_empty()
    assert one.intervals["used_l"].sum() == pytest.approx(burnt, abs=0.5)
    assert one.intervals["unexplained_drop_l"].sum() == 0.0


# -- SIM usage --------------------------------------------------------------------------------------------
def sim_records(rows):
    cols = ["tenant_id", "sim_id", "period_start", "period_end", "bytes_up", "bytes_down", "sms_mo", "sms_mt",
            "voice_seconds", "csd_seconds", "sessions", "seq"]  # fmt: skip
    return pl.DataFrame(rows, schema=cols, orient="row")


def hourly(tenant, sim, start, hours, seq0=0, up=1000):
    return [(tenant, sim, start + h * H, start + (h + 1) * H, up, 100, 1, 0, 0, 0, 2, seq0 + h) for h in range(hours)]


def test_sim_daily_cycles_and_tenant_days():
    rows = hourly("t", "A", ms(2026, 2, 13, 22), 4) + hourly("t", "B", ms(2026, 2, 27, 23), 3, seq0=100)
    late = [(*hourly("t", "A", ms(2026, 2, 13, 23), 1)[0][:4], 9999, 9999, 9, 9, 9, 9, 9, 500)]  # re-sent, differs
    recs = sim_records(rows + late)
    daily = sim_daily(recs)
    assert daily.select("sim_id", "day", "bytes_up", "sessions", "records").rows() == [
        ("A", date(2026, 2, 13), 2000, 4, 2), ("A", date(2026, 2, 14), 2000, 4, 2),
        ("B", date(2026, 2, 27), 1000, 2, 1), ("B", date(2026, 2, 28), 2000, 4, 2)]  # fmt: skip
    plans = pl.DataFrame({"sim_id": ["A", "B"], "cycle_start_day": [14, 31], "allowance_bytes": [10_000, None]})
    cyc = sim_cycles(recs, plans)
    # A (cycle day 14): Feb 13 is in Jan 14–Feb 13, Feb 14 starts the next cycle.
    # B (cycle day 31): February has 28 days, so Feb 27 is in Jan 31–Feb 27 and Feb 28 starts Feb 28–Mar 30.
    assert cyc.select("sim_id", "cycle_start", "cycle_end", "bytes_up", "records").rows() == [
        ("A", date(2026, 1, 14), date(2026, 2, 14), 2000, 2),
        ("A", date(2026, 2, 14), date(2026, 3, 14), 2000, 2),
        ("B", date(2026, 1, 31), date(2026, 2, 28), 1000, 1),
        ("B", date(2026, 2, 28), date(2026, 3, 31), 2000, 2),
    ]
    assert cyc["used_ratio"].to_list()[:2] == [0.22, 0.22] and cyc["used_ratio"].to_list()[2:] == [None, None]
    ten = tenant_sim_daily(recs)
    assert ten.select("day", "bytes_down", "sims").rows() == [
        (date(2026, 2, 13), 200, 1),
        (date(2026, 2, 14), 200, 1),
        (date(2026, 2, 27), 100, 1),
        (date(2026, 2, 28), 200, 1),
    ]


def test_sim_rollups_do_not_depend_on_arrival_order_and_late_records_restate():
    rnd = random.Random(5)
    rows = [r for s in ("A", "B", "C") for r in hourly("t", s, ms(2026, 5, 1), 24 * 40, seq0=rnd.randrange(10**6),
                                                        up=rnd.randint(1, 10**6))]  # fmt: skip
    full = sim_records(rows)
    some = sim_records([r for r in rows if r[2] % (3 * H)])  # every third hour missing
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    for fn in (sim_daily, tenant_sim_daily, sim_cycles):
        assert fn(sim_records(shuffled + shuffled[:50])).equals(fn(full))  # order and re-delivery do not matter
        assert not fn(some).equals(fn(full))  # the missing (late) records restate days and cycles
    cyc = sim_cycles(full)
    assert cyc["bytes_up"].sum() == sim_daily(full)["bytes_up"].sum() == full["bytes_up"].sum()
