"""Meter anomaly rules: detection quality on a simulated fleet, and per rule a series that must
fire next to one that must not; splitting the same data into other batches changes nothing."""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.anomaly import RULES, Context, MeterBatch, Numbering, Policy, Severity, State
from pipeline.anomaly.connectivity import ClockInvalid, Gap
from pipeline.anomaly.machines import FuelDrop, GeneratorUnexpectedRun, HvacDeltaT, HvacShortCycling
from pipeline.anomaly.meter_rules import METER_RULE_IDS, meter_rules
from pipeline.anomaly.power_quality import FrequencyOutOfBand, LowPowerFactor, VoltageOutOfBand
from pipeline.anomaly.registers import Flatline, ImplausibleJump, NegativeDelta
from pipeline.anomaly.schedule import parse_schedule
from pipeline.anomaly.spike import Spike
from pipeline.flags import Flag
from pipeline.simulate import SimConfig
from pipeline.tenancy import Registry
from tests.anomaly_replay import (
    EVENTS_SCHEMA,
    FAULT_RULE,
    INTERVALS_SCHEMA,
    READINGS_SCHEMA,
    StreamDerive,
    episodes,
    fleet_summary,
    replay,
    score,
    simulated_fleet,
    split_at,
    split_by_time,
)

NOW = 1_795_000_123_456  # 2026-11-18, as in test_simulate
MIN = 60_000
HOUR = 3_600_000
MON = int(datetime(2026, 11, 16, tzinfo=UTC).timestamp() * 1000)  # a Monday, 00:00 UTC


# -- building blocks ------------------------------------------------------------------------------------------


def registry(*devices: dict[str, Any]) -> Registry:
    reg = Registry()
    for d in devices:
        reg.put(
            {
                "subject_type": "device",
                "tenant_id": "t1",
                "site_id": "s1",
                "timezone": "UTC",
                "expected_period_s": 300,
                **d,
            }
        )
    return reg


def rows(device: str, quantity: str, ts: Sequence[int], values: Sequence[float], flags: int = 0) -> pl.DataFrame:
    n = len(ts)
    return pl.DataFrame(
        {
            "tenant_id": ["t1"] * n,
            "site_id": ["s1"] * n,
            "device_id": [device] * n,
            "quantity": [quantity] * n,
            "ts_ms": list(ts),
            "value": [float(v) for v in values],
            "flags": [flags] * n,
            "src_offset": list(range(n)),
        },
        schema=READINGS_SCHEMA,
    )


def every(start: int, count: int, step_s: int = 300) -> list[int]:
    return [start + i * step_s * 1000 for i in range(count)]


def run(
    rule: Any, frames: Sequence[pl.DataFrame], reg: Registry, batch_ms: int = 6 * HOUR, policy: Policy | None = None
) -> pl.DataFrame:
    data = pl.concat(frames).sort("ts_ms", "device_id", "quantity")
    return replay(split_by_time(data, batch_ms), reg, [rule], policy)


def firing(evals: pl.DataFrame, device: str) -> pl.DataFrame:
    return evals.filter((pl.col("subject_id") == device) & pl.col("firing")).sort("ts_ms")


def evaluated(evals: pl.DataFrame, device: str) -> pl.DataFrame:
    return evals.filter(pl.col("subject_id") == device)


# -- the simulated fleet --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet_scores() -> tuple[dict[str, Any], str]:
    fleet = simulated_fleet(SimConfig(seed=7, tenants=2, sites_per_tenant=2, days=8.0, unknown_devices=0), NOW)
    evals = replay(split_by_time(fleet.readings, 6 * HOUR), fleet.registry, meter_rules())
    assert set(evals["rule"].unique()) >= {
        "spike",
        "flatline",
        "gap",
        "voltage_out_of_band",
        "low_power_factor",
        "frequency_out_of_band",
        "fuel_drop",
        "hvac_delta_t",
        "hvac_short_cycling",
    }
    scores = score(episodes(evals), fleet.faults)
    return scores, fleet_summary(scores)


def test_detection_quality_on_the_simulated_fleet(fleet_scores: tuple[dict[str, Any], str]) -> None:
    scores, summary = fleet_scores
    print("\n" + summary)
    injected = set(FAULT_RULE.values())
    for rule in injected:
        s = scores[rule]
        assert s.faults > 0, rule
        assert s.recall >= 0.95 and s.precision >= 0.90, f"{rule}\n{summary}"
    for rule, s in scores.items():
        if rule not in injected:  # not injected: normal data and the other faults raise nothing
            assert s.episodes == 0, f"{rule}\n{summary}"


def test_every_meter_rule_once() -> None:
    rules = meter_rules()
    assert tuple(r.spec.id for r in rules) == METER_RULE_IDS
    assert {r.spec.id for r in rules} == {i for i, s in RULES.items() if s.subject_type == "device"}


# -- per rule: fires / stays quiet ----------------------------------------------------------------------------


def _register(start: int, days: int, rng: random.Random, spike_at: int | None, factor: float) -> tuple[list, list]:
    ts, vals, e = every(start, days * 288), [], 1e6
    for t in ts:
        h = (t % 86_400_000) / HOUR
        d = 40.0 * (1.5 + math.sin(2 * math.pi * h / 24)) * (1 + rng.gauss(0, 0.03))
        e += d * (factor if t == spike_at else 1.0)
        vals.append(round(e, 1))
    return ts, vals


def test_spike() -> None:
    at = MON + 2 * 86_400_000 + 12 * HOUR + 10 * MIN  # Wednesday 12:10, third 5-min step of its interval
    frames = []
    for dev, factor in (("spiky", 10.0), ("bumpy", 2.0)):
        ts, vals = _register(MON, 3, random.Random(dev), at, factor)
        frames.append(rows(dev, "active_energy_import", ts, vals))
    reg = registry(
        {"subject_id": "spiky", "kind": "electricity_meter"}, {"subject_id": "bumpy", "kind": "electricity_meter"}
    )
    ev = run(Spike(), frames, reg)
    fired = firing(ev, "spiky")
    assert fired["ts_ms"].to_list() == [at // (15 * MIN) * (15 * MIN)]
    assert "robust z" in fired["message"][0] and fired["observed"][0] > fired["threshold"][0]
    assert firing(ev, "bumpy").is_empty() and evaluated(ev, "bumpy").height > 90  # evaluated, not firing
    assert ev.filter(pl.col("ts_ms") < MON + 86_400_000).is_empty()  # under min_history: not evaluated


def test_spike_needs_a_reference_of_the_same_day_type() -> None:
    """Monday against a weekend-only history is not evaluated; with a Friday in the window it fires."""
    at = MON + 12 * HOUR + 10 * MIN
    reg = registry({"subject_id": "m", "kind": "electricity_meter"})
    for days_before, evaluated_monday in ((2, False), (3, True)):
        ts, vals = _register(MON - days_before * 86_400_000, days_before + 1, random.Random(5), at, 10.0)
        ev = run(Spike(), [rows("m", "active_energy_import", ts, vals)], reg)
        monday = ev.filter(pl.col("ts_ms") >= MON)
        assert (monday.height > 90) is evaluated_monday, days_before
        assert firing(ev, "m")["ts_ms"].to_list() == ([at // (15 * MIN) * (15 * MIN)] if evaluated_monday else [])


def test_spike_needs_an_excess_that_matters_against_the_devices_level() -> None:
    """A solar site imports next to nothing around noon: a few Wh there are 9x the neighbouring intervals
    and far above the same time of day, but no spike of the device's consumption (``level_floor``: the
    excess must be material against the median of all its intervals). Without the floor it fires."""
    at = MON + 2 * 86_400_000 + 12 * HOUR + 10 * MIN
    rng = random.Random(7)
    ts, vals, e = every(MON, 3 * 288), [], 1e6
    for t in ts:
        h = (t % 86_400_000) / HOUR
        load = 40.0 * (1.5 + math.sin(2 * math.pi * h / 24)) * (1 + rng.gauss(0, 0.03))
        e += 5.0 if t == at else (0.2 * (1 + rng.gauss(0, 0.3)) if 10 <= h < 14 else load)
        vals.append(round(e, 1))
    frames, reg = [rows("pv", "active_energy_import", ts, vals)], registry({"subject_id": "pv"})
    ev = run(Spike(), frames, reg)
    assert firing(ev, "pv").is_empty() and evaluated(ev, "pv").height > 90
    no_floor = run(Spike(), frames, reg, policy=Policy({"spike": {"level_floor": 0.0}}))
    assert firing(no_floor, "pv")["ts_ms"].to_list() == [at // (15 * MIN) * (15 * MIN)]


def test_spike_is_judged_against_the_devices_own_noise() -> None:
    """The same 4x interval, after the same history, in a series whose 15-min values vary by 3% and in one
    whose values vary by 35% (a water meter's): against 3% it is a spike; against 35% such intervals are
    the noise's own tail (on simulated fleets every false alert was one, 3-5 sigma of the device's
    ln(x/c)), which ``noise_threshold`` (8 sigma) leaves alone. Without that test both fire."""
    at = MON + 2 * 86_400_000 + 12 * HOUR  # Wednesday 12:00, the interval 12:00-12:15
    frames = []
    for dev, cv in (("steady", 0.03), ("noisy", 0.35)):
        rng, e, vals = random.Random(dev), 1e6, []
        ts = every(MON, 3 * 96, step_s=900)
        for t in ts:
            e += 0.0 if t == MON else 40.0 * (4.0 if t == at + 15 * MIN else max(0.05, 1 + rng.gauss(0, cv)))
            vals.append(round(e, 1))
        frames.append(rows(dev, "water_volume", ts, vals))
    reg = registry(*({"subject_id": d, "kind": "water_meter", "expected_period_s": 900} for d in ("steady", "noisy")))
    ev = run(Spike(), frames, reg)
    assert firing(ev, "steady")["ts_ms"].to_list() == [at]
    assert firing(ev, "noisy").is_empty() and evaluated(ev, "noisy").height > 90
    no_noise_test = run(Spike(), frames, reg, policy=Policy({"spike": {"noise_threshold": 0.0}}))
    assert at in firing(no_noise_test, "noisy")["ts_ms"].to_list()


def test_spike_on_a_daily_closing_edge() -> None:
    """A business closes at 18:30-19:00 every day. A x10 poll just after the edge is a spike, 3x the median of
    its neighbours (which straddle the edge: 88, 40 | 24, 24 Wh) and 4x the same 15 minutes on earlier days.
    The edge itself, on every day, is not."""
    at = MON + 2 * 86_400_000 + 19 * HOUR + 5 * MIN  # Wednesday 19:05: the interval 19:00-19:15
    rng = random.Random(11)
    ts, vals, e = every(MON, 3 * 288), [], 1e6
    for t in ts:
        h = (t % 86_400_000) / HOUR
        load = 8.0 + 32.0 * min(1.0, max(0.0, 2 * (19.0 - h)))  # open: 40 Wh per 5 min; closed from 19:00: 8
        e += load * (1 + rng.gauss(0, 0.03)) * (10.0 if t == at else 1.0)
        vals.append(round(e, 1))
    reg = registry({"subject_id": "shop", "kind": "electricity_meter"})
    ev = run(Spike(), [rows("shop", "active_energy_import", ts, vals)], reg)
    assert firing(ev, "shop")["ts_ms"].to_list() == [at // (15 * MIN) * (15 * MIN)]


def test_flatline_keeps_the_quiet_register_rows_of_a_device_whose_signal_is_stuck() -> None:
    """With a lifecycle, each part of flatline leaves out quiet rows, but a device that fires in one part
    keeps its quiet rows in the other (relevant() over both), here register readings at their own times."""
    ts = every(MON, 14)
    regs = [t + 30_000 for t in ts]
    data = pl.concat([
        rows("mixed", "voltage_l1", ts, [231.0] * 14),
        rows("mixed", "active_energy_import", regs, [1000.0 + 40 * i for i in range(14)]),
        rows("mixed", "active_power", regs, [500.0 + i for i in range(14)]),
        rows("calm", "active_energy_import", regs, [1000.0 + 40 * i for i in range(14)]),
        rows("calm", "active_power", regs, [500.0 + i for i in range(14)]),
    ]).sort("ts_ms", "device_id", "quantity")  # fmt: skip
    reg = registry(*({"subject_id": d, "kind": "electricity_meter"} for d in ("mixed", "calm")))

    def evaluate(open_: dict | None) -> pl.DataFrame:
        batch = Numbering().batch(data, pl.DataFrame(), pl.DataFrame())
        return Flatline()(batch, Context(Policy(), reg, ts[-1] + HOUR, open_)).sort("subject_id", "ts_ms")

    full, pruned = evaluate(None), evaluate({})
    assert set(firing(full, "mixed")["ts_ms"]) == set(ts[11:]) and set(full["subject_id"]) == {"mixed", "calm"}
    assert pruned.equals(full.filter(pl.col("subject_id") == "mixed"))
    assert set(regs[1:]) <= set(pruned["ts_ms"])  # the register rows of "mixed", none of them firing


def test_flatline() -> None:
    ts = every(MON, 40)
    rng = random.Random(3)
    frozen = [1000.0 + 40 * min(i, 10) for i in range(40)]  # register stops after the 11th reading
    power = [500 + rng.uniform(-20, 20) for _ in ts]
    idle = [30 + rng.uniform(-5, 5) for _ in ts]
    volts = [231.0] * 12 + [round(230 + rng.uniform(-1, 1), 1) for _ in range(28)]
    frames = [
        rows("busy", "active_energy_import", ts, frozen),
        rows("busy", "active_power", ts, power),
        rows("idle", "active_energy_import", ts, frozen),
        rows("idle", "active_power", ts, idle),
        rows("stuck", "voltage_l1", ts, volts),
        rows("alive", "voltage_l1", ts, [round(230 + rng.uniform(-1, 1), 1) for _ in ts]),
        rows("off", "current_l1", ts, [0.0] * 40),
    ]
    reg = registry(*({"subject_id": d, "kind": "electricity_meter"} for d in ("busy", "idle", "stuck", "alive", "off")))
    ev = run(Flatline(), frames, reg, batch_ms=HOUR)
    assert firing(ev, "busy")["ts_ms"].to_list() == ts[11:]
    assert firing(ev, "idle").is_empty() and evaluated(ev, "idle").height == 39
    assert firing(ev, "stuck")["ts_ms"].to_list() == [ts[11]]  # 12 equal readings, then it moves
    assert firing(ev, "alive").is_empty() and firing(ev, "off").is_empty()  # no load is not a stuck sensor


def test_gap() -> None:
    ts = every(MON, 24)
    holey = ts[:6] + ts[12:]  # 35 minutes without a reading
    edge = ts[:6] + ts[8:]  # 15 minutes: more than 2 x 300 s
    tight = ts[:6] + ts[7:]  # 10 minutes: not more
    frames = [
        rows("holey", "frequency", holey, [50.0] * len(holey)),
        rows("edge", "frequency", edge, [50.0] * len(edge)),
        rows("tight", "frequency", tight, [50.0] * len(tight)),
    ]
    reg = registry(*({"subject_id": d, "kind": "electricity_meter"} for d in ("holey", "edge", "tight")))
    ev = run(Gap(), frames, reg, batch_ms=HOUR)
    gap = firing(ev, "holey")
    assert gap["ts_ms"].to_list() == [ts[6], ts[11]]  # first and last missed reading
    assert "gap_start=2026-11-16T00:25Z gap_end=2026-11-16T01:00Z" in gap["message"][0]
    assert gap["observed"][0] == 2100.0 and gap["threshold"][0] == 600.0
    after = evaluated(ev, "holey").filter(pl.col("ts_ms") >= ts[12])
    assert after.height == 12 and not after["firing"].any()  # non-firing rows clear the alert
    assert firing(ev, "edge")["ts_ms"].to_list() == [ts[6], ts[7]]
    assert firing(ev, "tight").is_empty()
    # behind a gateway that uploads every 15 min, one upload delivered late (a 20-min hole) is not a gap
    late = ts[:6] + ts[9:]
    behind = registry(
        {"subject_id": "gw", "kind": "gateway", "expected_period_s": 900},
        {"subject_id": "late", "kind": "electricity_meter", "gateway_id": "gw"},
        {"subject_id": "holey", "kind": "electricity_meter", "gateway_id": "gw"},
    )
    ev = run(Gap(), [rows("late", "frequency", late, [50.0] * len(late)), frames[0]], behind, batch_ms=HOUR)
    assert firing(ev, "late").is_empty() and firing(ev, "holey")["threshold"].to_list() == [1800.0, 1800.0]
    disabled = run(Gap(), frames, reg, batch_ms=HOUR, policy=Policy(tenants={"t1": {"gap": {"enabled": False}}}))
    assert disabled.is_empty()


def test_register_events() -> None:
    ts = every(MON, 12)
    reset = [5000.0 + 10 * i for i in range(6)] + [1.0 + 10 * i for i in range(6)]
    rollover = [999_950.0 + 10 * i for i in range(6)] + [2.0 + 10 * i for i in range(6)]
    jumps = [100.0 + 50 * i for i in range(6)] + [1000.0 + 50 * i for i in range(6)]  # 650 Wh in 5 min
    steady = [100.0 + 80 * i for i in range(12)]  # 80 Wh in 5 min: 960 W, under the rated 1 kW
    frames = [
        rows("reset", "active_energy_import", ts, reset),
        rows("rolled", "active_energy_import", ts, rollover),
        rows("jumpy", "active_energy_import", ts, jumps),
        rows("steady", "active_energy_import", ts, steady),
    ]
    reg = registry(
        {"subject_id": "reset", "kind": "electricity_meter"},
        {
            "subject_id": "rolled",
            "kind": "electricity_meter",
            "register_ceilings": {"active_energy_import": 1_000_000.0},
        },
        {"subject_id": "jumpy", "kind": "electricity_meter", "rated_power_w": 1000.0},
        {"subject_id": "steady", "kind": "electricity_meter", "rated_power_w": 1000.0},
    )
    neg = run(NegativeDelta(), frames, reg, batch_ms=15 * MIN)
    assert neg["subject_id"].to_list() == ["reset"] and neg["ts_ms"].to_list() == [ts[6]]  # once, not per batch
    assert neg["observed"][0] == 1.0 - 5050.0
    jump = run(ImplausibleJump(), frames, reg, batch_ms=15 * MIN)
    assert jump["subject_id"].to_list() == ["jumpy"] and jump["observed"][0] == pytest.approx(650.0)
    assert jump["threshold"][0] == pytest.approx(1000.0 / 12)


def test_voltage_out_of_band() -> None:
    ts = every(MON, 9)  # 40 min: windows 00:00, 00:10, 00:20 complete, 00:30-00:40 not yet (no later reading)
    frames = []
    for dev, low in (("sag", 195.0), ("dip", 200.0), ("fine", 212.0)):
        for phase in (1, 2, 3):
            frames.append(
                rows(dev, f"voltage_l{phase}", ts, [low if phase == 2 and i in (2, 3) else 230.0 for i in range(9)])
            )
    reg = registry(
        *({"subject_id": d, "kind": "electricity_meter", "nominal_voltage": 230.0} for d in ("sag", "dip", "fine"))
    )
    ev = run(VoltageOutOfBand(), frames, reg)
    sag = firing(ev, "sag")
    assert sag["ts_ms"].to_list() == [MON + 20 * MIN] and sag["severity"][0] == int(Severity.CRITICAL)
    assert "voltage_l2 195.0 V < 195.5 V" in sag["message"][0]
    assert firing(ev, "dip")["severity"].to_list() == [int(Severity.WARNING)]
    assert firing(ev, "fine").is_empty() and evaluated(ev, "fine").height == 4  # one row per complete window
    us = registry(
        {"subject_id": "sag", "kind": "electricity_meter", "nominal_voltage": 230.0},
        {"subject_id": "dip", "kind": "electricity_meter", "nominal_voltage": 230.0},
        {"subject_id": "fine", "kind": "electricity_meter", "nominal_voltage": 230.0},
    )
    site = Policy(sites={("t1", "s1"): {"voltage_out_of_band": {"nominal_v": 240.0}}})  # overrides the registry
    ev = run(VoltageOutOfBand(), frames, us, policy=site)
    assert firing(ev, "fine")["severity"].to_list() == [int(Severity.WARNING)]  # 212 V is 11.7 % under 240 V


def test_frequency_out_of_band_and_60_hz_sites() -> None:
    ts = every(MON, 5)
    frames = [
        rows("low", "frequency", ts, [49.3, 49.3, 50.0, 50.0, 50.0]),
        rows("crit", "frequency", ts, [46.8, 46.8, 50.0, 50.0, 50.0]),
        rows("ok", "frequency", ts, [50.3, 50.3, 50.0, 50.0, 50.0]),
        rows("us", "frequency", ts, [59.8, 59.8, 50.0, 50.0, 50.0]),
    ]
    reg = registry(
        {"subject_id": "low", "kind": "electricity_meter"},
        {"subject_id": "crit", "kind": "electricity_meter"},
        {"subject_id": "ok", "kind": "electricity_meter"},
        {"subject_id": "us", "kind": "electricity_meter", "nominal_frequency": 60.0},
    )
    ev = run(FrequencyOutOfBand(), frames, reg)
    assert firing(ev, "low")["severity"].to_list() == [int(Severity.WARNING)]
    assert firing(ev, "crit")["severity"].to_list() == [int(Severity.CRITICAL)]
    assert firing(ev, "ok").is_empty()
    us = evaluated(ev, "us").sort("ts_ms")
    assert us["firing"].to_list() == [False, True] and us["severity"][1] == int(Severity.CRITICAL)  # 50 Hz at 60


def test_low_power_factor() -> None:
    ts = every(MON, 13)  # one full hour and the reading that completes it
    frames = [
        rows("poor", "power_factor", ts, [0.85] * 13),
        rows("good", "power_factor", ts, [0.92] * 13),
        rows("export", "power_factor", ts, [-0.95] * 13),
    ]
    reg = registry(*({"subject_id": d, "kind": "electricity_meter"} for d in ("poor", "good", "export")))
    ev = run(LowPowerFactor(), frames, reg)
    assert firing(ev, "poor")["ts_ms"].to_list() == [MON + HOUR]
    assert firing(ev, "good").is_empty() and firing(ev, "export").is_empty()
    assert evaluated(ev, "good").height == 1


def test_clock_invalid() -> None:
    ts = every(MON, 3)
    frames = pl.concat(
        [
            rows("doubtful", "active_power", ts, [1.0] * 3, int(Flag.CLOCK_DOUBTFUL)),
            rows("invalid", "active_power", ts[:1], [1.0], int(Flag.CLOCK_INVALID)),
            rows("quality", "active_power", ts, [1.0] * 3, int(Flag.DEVICE_QUALITY)),
            rows("ahead", "active_power", [ts[2] + 10 * MIN], [1.0]),
        ]
    )
    reg = registry(
        *({"subject_id": d, "kind": "electricity_meter"} for d in ("doubtful", "invalid", "quality", "ahead"))
    )
    empty = (pl.DataFrame(schema=INTERVALS_SCHEMA), pl.DataFrame(schema=EVENTS_SCHEMA))
    ev = ClockInvalid()(MeterBatch(frames, *empty), Context(Policy(), reg, ts[2]))
    assert ev["firing"].all() and ev["rule"].unique().to_list() == ["clock_invalid"]  # an event rule: firing only
    assert sorted(ev["subject_id"].to_list()) == ["ahead", "doubtful", "doubtful", "doubtful", "invalid"]
    assert "in the future" in firing(ev, "ahead")["message"][0]


def test_fuel_drop() -> None:
    ts = every(MON, 20)
    level = [400.0] * 6 + [400.0 - 2.5 * (i + 1) for i in range(8)] + [380.0] * 6  # 20 L over 8 readings
    stopped, running = [0.0] * 20, [1.0] * 20
    frames = [
        rows("theft", "fuel_level", ts, level),
        rows("theft", "engine_state", ts, stopped),
        rows("theft", "generator_runtime", ts, [7200.0] * 20),
        rows("burn", "fuel_level", ts, level),
        rows("burn", "engine_state", ts, running),
        rows("refuel", "fuel_level", ts, level[::-1]),
        rows("refuel", "engine_state", ts, stopped),
    ]
    reg = registry(
        *({"subject_id": d, "kind": "generator", "tank_capacity_l": 990.0} for d in ("theft", "burn", "refuel"))
    )
    ev = run(FuelDrop(), frames, reg, batch_ms=HOUR)
    theft = firing(ev, "theft")
    assert theft.height >= 5 and set(theft["severity"]) == {int(Severity.CRITICAL)}
    assert theft["threshold"][0] == 3.0  # min(3 L, 2 % of 990 L)
    assert firing(ev, "burn").is_empty() and evaluated(ev, "burn").height == 13
    assert firing(ev, "refuel").is_empty()


def test_generator_unexpected_run() -> None:
    sat, mon = MON + 5 * 86_400_000 + 10 * HOUR, MON + 10 * HOUR
    frames = []
    for dev, start in (("weekend", sat), ("weekday", mon), ("unscheduled", sat)):
        ts = every(start, 6)
        frames.append(rows(dev, "generator_runtime", ts, [1000.0 + 300 * i for i in range(6)]))
    sched = {"run_schedule": "Mon-Fri 08:00-18:00"}
    reg = registry(
        {"subject_id": "weekend", "kind": "generator", "attributes": sched, "timezone": "Asia/Kolkata"},
        {"subject_id": "weekday", "kind": "generator", "attributes": sched},
        {"subject_id": "unscheduled", "kind": "generator", "attributes": {}},
    )
    ev = run(GeneratorUnexpectedRun(), frames, reg)
    assert firing(ev, "weekend").height == 5 and "Asia/Kolkata" in firing(ev, "weekend")["message"][0]
    assert firing(ev, "weekday").is_empty() and evaluated(ev, "weekday").height == 5
    assert evaluated(ev, "unscheduled").is_empty()
    assert parse_schedule("Sat 22:00-06:00") == ((8520, 9000),)  # overnight: into Sunday
    assert parse_schedule("Sun 22:00-06:00") == ((0, 360), (9960, 10080))  # into Monday


def _hvac(dev: str, ts: list[int], deltas: list[float], on: list[float]) -> list[pl.DataFrame]:
    return [
        rows(dev, "hvac_return_air_temp", ts, [24.0] * len(ts)),
        rows(dev, "hvac_supply_air_temp", ts, [24.0 - d for d in deltas]),
        rows(dev, "hvac_run_state", ts, on),
        rows(dev, "hvac_mode", ts, [2.0] * len(ts)),
    ]


def test_hvac_delta_t() -> None:
    ts = every(MON, 12)
    weak = [10.0] * 3 + [3.0] * 5 + [10.0] * 4
    brief = [10.0] * 3 + [3.0] * 4 + [10.0] * 5
    frames = [
        *_hvac("weak", ts, weak, [1.0] * 12),
        *_hvac("brief", ts, brief, [1.0] * 12),
        *_hvac("idle", ts, [0.5] * 12, [0.0] * 12),
    ]
    reg = registry(*({"subject_id": d, "kind": "hvac"} for d in ("weak", "brief", "idle")))
    ev = run(HvacDeltaT(), frames, reg)
    assert firing(ev, "weak")["ts_ms"].to_list() == [ts[7]]
    assert firing(ev, "brief").is_empty() and evaluated(ev, "brief").height == 12
    assert evaluated(ev, "idle").is_empty()  # compressor off: not evaluated


def test_hvac_short_cycling() -> None:
    fast = every(MON, 62, 60)  # 1-min readings, 2 min on / 2 min off: 15 starts an hour
    slow = every(MON, 14)  # 5-min readings, one 20-min run
    frames = [
        rows("cycling", "hvac_run_state", fast, [float(i // 2 % 2) for i in range(62)]),
        rows("steady", "hvac_run_state", slow, [0.0, 0.0] + [1.0] * 4 + [0.0] * 8),
    ]
    reg = registry({"subject_id": "cycling", "kind": "hvac"}, {"subject_id": "steady", "kind": "hvac"})
    ev = run(HvacShortCycling(), frames, reg)
    cyc = firing(ev, "cycling")
    assert cyc["ts_ms"].to_list() == [MON + HOUR] and cyc["observed"][0] == 15
    assert firing(ev, "steady").is_empty() and evaluated(ev, "steady").height == 1


# -- batching does not matter -----------------------------------------------------------------------------------


def _mixed_fleet() -> tuple[pl.DataFrame, Registry]:
    """A day of data (two for one register) that makes most rules fire somewhere."""
    rng = random.Random(11)
    ts = every(MON, 288)
    frames: list[pl.DataFrame] = []
    ts_e, vals = _register(MON - 3 * 86_400_000, 4, rng, MON + 18 * HOUR + 10 * MIN, 10.0)  # from Friday
    frames.append(rows("m1", "active_energy_import", ts_e, vals))
    frames.append(rows("m1", "active_power", ts, [500 + rng.uniform(-50, 50) for _ in ts]))
    frames += [
        rows(
            "m1",
            f"voltage_l{p}",
            ts,
            [195.0 if p == 1 and 100 <= i < 112 else round(230 + rng.gauss(0, 1), 1) for i in range(288)],
        )
        for p in (1, 2, 3)
    ]
    frames.append(rows("m1", "power_factor", ts, [0.8 if 150 <= i < 162 else 0.95 for i in range(288)]))
    holey = [t for i, t in enumerate(ts) if not 40 <= i < 70]
    frames.append(rows("m2", "frequency", holey, [round(50 + rng.gauss(0, 0.02), 3) for _ in holey]))
    frozen = [2000.0 + 30 * min(i, 120) if not 200 <= i < 214 else 2000.0 + 30 * 120 for i in range(288)]
    frames += [
        rows("m3", "active_energy_import", ts, [v + (30 * (i - 120) if i > 120 else 0) for i, v in enumerate(frozen)]),
        rows("m3", "active_power", ts, [400 + rng.uniform(-10, 10) for _ in ts]),
    ]
    level = [400.0 - (2.5 * (i - 99) if 100 <= i < 108 else 0) - (20.0 if i >= 108 else 0) for i in range(288)]
    frames += [rows("g1", "fuel_level", ts, level), rows("g1", "engine_state", ts, [0.0] * 288)]
    frames += _hvac("h1", ts, [3.0 if 50 <= i < 60 else 10.0 for i in range(288)], [1.0] * 288)
    reg = registry(
        {"subject_id": "m1", "kind": "electricity_meter"},
        {"subject_id": "m2", "kind": "electricity_meter"},
        {"subject_id": "m3", "kind": "electricity_meter"},
        {"subject_id": "g1", "kind": "generator"},
        {"subject_id": "h1", "kind": "hvac"},
    )
    return pl.concat(frames).sort("ts_ms", "device_id", "quantity"), reg


_MIXED = _mixed_fleet()
_POLICY = Policy()


def _evaluations(batches: list[pl.DataFrame]) -> set[tuple[str, str, int, bool]]:
    ev = replay(batches, _MIXED[1], meter_rules(), _POLICY)
    return set(ev.select("rule", "subject_id", "ts_ms", "firing").iter_rows())


@functools.lru_cache(maxsize=1)
def _reference() -> frozenset[tuple[str, str, int, bool]]:
    return frozenset(_evaluations(split_by_time(_MIXED[0], 2 * HOUR)))


def test_the_mixed_fleet_makes_the_rules_fire() -> None:
    fired = {r for r, _, _, f in _reference() if f}
    assert fired >= {
        "spike",
        "flatline",
        "gap",
        "voltage_out_of_band",
        "low_power_factor",
        "fuel_drop",
        "hvac_delta_t",
    }, fired


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=1, max_value=_MIXED[0].height - 1), min_size=1, max_size=12))
def test_batching_does_not_change_the_evaluations(cuts: list[int]) -> None:
    assert _evaluations(split_at(_MIXED[0], cuts)) == _reference()


def test_disabled_rules_emit_nothing() -> None:
    data = _MIXED[0].filter(pl.col("ts_ms") < MON + 6 * HOUR)
    off = Policy(tenants={"t1": {rule: {"enabled": False} for rule in METER_RULE_IDS}})
    assert replay([data], _MIXED[1], meter_rules(), off).is_empty()
    everywhere = Policy(rules={rule: {"enabled": False} for rule in METER_RULE_IDS})  # no tenant/site: literals
    assert everywhere.uniform("gap") is not None and replay([data], _MIXED[1], meter_rules(), everywhere).is_empty()
    site = Policy(sites={("t1", "s1"): {"gap": {"enabled": False}}})  # only that site
    ev = replay([data], _MIXED[1], meter_rules(), site)
    assert "gap" not in set(ev["rule"]) and ev.height > 0


def test_leaving_out_quiet_rows_of_subjects_without_an_open_episode_changes_no_transition() -> None:
    """With a lifecycle, rules see the open episodes (``Context.open``) and drop the non-firing rows
    of every other subject: the transitions are those of the full evaluation stream."""
    from pipeline.anomaly.lifecycle import AlertTracker

    def transitions(pruned: bool) -> tuple[list, int]:
        tracker, derive, rules, numbering = AlertTracker(_POLICY), StreamDerive(_MIXED[1]), meter_rules(), Numbering()
        out, rows = [], 0
        for b in split_by_time(_MIXED[0], 4 * HOUR):
            now = int(b["ts_ms"].max()) + 60_000  # type: ignore[arg-type]
            ctx = Context(_POLICY, _MIXED[1], now, tracker.open_subjects() if pruned else None)
            batch = numbering.batch(b, *derive(b))
            frames = [f for f in (r(batch, ctx) for r in rules) if f.height]
            evals = pl.concat(frames) if frames else pl.DataFrame()
            rows += evals.height
            out += tracker.apply(evals, now - 60_000)
        return out, rows

    full, every = transitions(False)
    pruned, fewer = transitions(True)
    assert {t.state for t in full} == {State.RAISED, State.CLEARED} and len({t.rule for t in full}) >= 5
    assert pruned == full and fewer < every / 3
