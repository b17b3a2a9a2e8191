"""The anomaly stage around the rules: transitions as alerts_store rows, gap causes, scoring."""

from __future__ import annotations

import polars as pl

from pipeline.anomaly import RULES, Policy, Severity, State, evaluations
from pipeline.anomaly.lifecycle import AlertTracker
from pipeline.anomaly.quality import Episode, Expected, expected_alerts, late_deliveries, score
from pipeline.anomaly.stage import MeterAlerts
from pipeline.sinks.alerts import alert_headers, transitions_of
from pipeline.tenancy import Registry

HOUR = 3_600_000


class HighValue:
    """A stand-in rule: fires on every reading above 100 (the stage, not a rule, is under test)."""

    spec = RULES["gap"]

    def __call__(self, batch, ctx) -> pl.DataFrame:
        r = batch.readings
        frame = r.select(
            "tenant_id", "site_id", pl.col("device_id").alias("subject_id"), "ts_ms",
            (pl.col("value") > 100).alias("firing"), pl.col("value").alias("observed"),
        )  # fmt: skip
        return evaluations(frame, subject_type="device", rule="gap", severity=int(Severity.WARNING))


def _readings(values: list[float], device: str = "m1") -> pl.DataFrame:
    return pl.DataFrame({"tenant_id": "t1", "site_id": "s1", "device_id": device, "quantity": "active_power",
                         "ts_ms": [i * 60_000 for i in range(len(values))], "value": values})  # fmt: skip


def _registry() -> Registry:
    reg = Registry()
    reg.put({"subject_id": "m1", "subject_type": "device", "kind": "electricity_meter", "tenant_id": "t1",
             "site_id": "s1", "sim_iccid": "8991000000000000001"})  # fmt: skip
    return reg


def test_transitions_become_alerts_store_rows_with_the_gap_cause() -> None:
    calls = []

    def attribute(tenant: str, iccid: str, start: int, end: int) -> tuple[str, str]:
        calls.append((tenant, iccid, start, end))
        return "connectivity", "sim-pseudonym"

    stage = MeterAlerts([HighValue()], AlertTracker(Policy()), Policy(), _registry(), attribute=attribute)
    tables = stage(_readings([5, 500, 5, 5, 5]), now_ms=10 * HOUR)
    got = transitions_of(tables["alerts_store"])
    assert [t.state for t in got] == [State.RAISED, State.CLEARED]
    assert all(t.attributes == {"cause": "connectivity", "sim_id": "sim-pseudonym"} for t in got)
    assert calls == [("t1", "8991000000000000001", 60_000, 60_000 + 500_000)]  # observed = gap seconds, no limit
    assert dict(alert_headers(got[0]))["alert.severity"] == b"warning"
    assert stage(_readings([5, 5]), now_ms=10 * HOUR) == {}  # no transition, no table


def test_a_failing_rule_is_logged_and_skipped() -> None:
    class Broken:
        spec = RULES["spike"]

        def __call__(self, batch, ctx) -> pl.DataFrame:
            raise RuntimeError("bug")

    stage = MeterAlerts([Broken(), HighValue()], AlertTracker(Policy()), Policy(), _registry())
    assert "alerts_store" in stage(_readings([500]), now_ms=HOUR)


def test_scores_per_rule() -> None:
    faults = [
        {"kind": "spike", "device_id": "a", "tenant_id": "t", "iccid": None, "ts": 10 * HOUR, "end_ts": 10 * HOUR},
        {"kind": "spike", "device_id": "b", "tenant_id": "t", "iccid": None, "ts": 10 * HOUR, "end_ts": 10 * HOUR},
        {"kind": "sim_offline", "device_id": None, "tenant_id": "t", "iccid": "I1", "ts": HOUR, "end_ts": 3 * HOUR},
        {
            "kind": "gap",
            "device_id": "m1",
            "tenant_id": "t",
            "iccid": None,
            "ts": HOUR,
            "end_ts": 3 * HOUR,
            "detail": "no readings for 2 h, cause=connectivity",
        },
        {
            "kind": "gap",
            "device_id": "m2",
            "tenant_id": "t",
            "iccid": None,
            "ts": HOUR,
            "end_ts": 3 * HOUR,
            "detail": "no readings for 2 h, cause=device",
        },
        {"kind": "rollover", "device_id": "c", "tenant_id": "t", "iccid": None, "ts": HOUR, "end_ts": HOUR},
        {"kind": "sim_roaming", "device_id": None, "tenant_id": "t", "iccid": "I1", "ts": HOUR, "end_ts": 4 * HOUR},
    ]
    expected = expected_alerts(faults, lambda t, i: f"p({i})")
    assert Expected("gap", "m1", HOUR, 3 * HOUR, "connectivity") in expected
    assert Expected("gap", "m2", HOUR, 3 * HOUR, "device") in expected
    assert sum(x.rule == "gap" for x in expected) == 2  # sim_offline is the SIM side of m1's gap, not another
    assert Expected("sim_roaming", "p(I1)", HOUR, 4 * HOUR) in expected
    episodes = [
        Episode("spike", "a", 10 * HOUR + 900_000, 10 * HOUR + 900_000),  # within the hour of tolerance
        Episode("spike", "a", 20 * HOUR, 20 * HOUR),  # a false one
        Episode("gap", "m1", HOUR, HOUR, "connectivity"),
        Episode("gap", "m2", 2 * HOUR, 2 * HOUR, "connectivity"),  # detected, wrong cause
        Episode("negative_delta", "c", HOUR, HOUR),  # a rollover must not alert
    ]
    s = score(episodes, expected)
    assert (s["spike"].injected, s["spike"].detected, s["spike"].episodes, s["spike"].true_episodes) == (2, 1, 2, 1)
    assert s["spike"].recall == 0.5 and s["spike"].precision == 0.5
    assert (s["gap"].recall, s["gap"].precision, s["gap"].cause_correct) == (1.0, 1.0, 1)
    assert s["negative_delta"].recall is None and s["negative_delta"].precision == 0.0
    assert s["sim_roaming"].recall == 0.0 and s["sim_roaming"].precision is None


def test_warm_up_faults_and_late_deliveries_are_set_aside_not_scored() -> None:
    day = 24 * HOUR
    start = 10 * day + HOUR // 2  # the first hourly SIM record is at 10 d 01:00
    faults = [
        # day 12 has two earlier days of data (10 and 11): below min_history_days (3), the rule cannot judge it
        {"kind": "sim_data_spike", "device_id": None, "tenant_id": "t", "iccid": "I1", "ts": 12 * day + 5 * HOUR,
         "end_ts": 12 * day + 5 * HOUR},
        {"kind": "sim_data_spike", "device_id": None, "tenant_id": "t", "iccid": "I2", "ts": 13 * day,
         "end_ts": 13 * day},
        # two uploads of gateway g in a row delivered late: m1's readings 11 d 10:05-10:30
        {"kind": "late", "device_id": "g", "tenant_id": "t", "iccid": None, "ts": 11 * day + 10 * HOUR + 300_000,
         "end_ts": 11 * day + 10 * HOUR + 900_000},
        {"kind": "late", "device_id": "g", "tenant_id": "t", "iccid": None, "ts": 11 * day + 10 * HOUR + 1_200_000,
         "end_ts": 11 * day + 10 * HOUR + 1_800_000},
    ]  # fmt: skip
    expected = expected_alerts(faults, lambda t, i: f"p({i})", start_ms=start)
    assert [x.warmup for x in expected] == [True, False]
    late = late_deliveries(faults, {"m1": "g", "m2": "g", "m3": "other"})
    assert set(late) == {"m1", "m2", "g"}
    episodes = [
        Episode("sim_data_spike", "p(I2)", 13 * day, 13 * day),
        Episode("gap", "m1", 11 * day + 10 * HOUR + 300_000, 11 * day + 10 * HOUR + 1_500_000),  # late: aside
        Episode("gap", "m3", 11 * day + 10 * HOUR + 300_000, 11 * day + 10 * HOUR + 1_500_000),  # other gateway
        Episode("gap", "m2", 11 * day + 14 * HOUR, 11 * day + 15 * HOUR),  # hours after the late uploads: false
    ]
    s = score(episodes, expected, late)
    spike = s["sim_data_spike"]
    assert (spike.injected, spike.warmup, spike.detected, spike.recall, spike.precision) == (1, 1, 1, 1.0, 1.0)
    assert [e.subject_id for e in s["gap"].late] == ["m1"]
    assert [e.subject_id for e in s["gap"].false] == ["m3", "m2"] and s["gap"].precision == 0.0
    # without the fleet's start nothing is warm-up, without the late spans every gap episode is scored
    assert score(episodes, expected_alerts(faults, lambda t, i: f"p({i})"))["sim_data_spike"].recall == 0.5
    assert score(episodes, expected)["gap"].episodes == 3


def test_spike_faults_without_a_same_type_reference_day_are_warm_up() -> None:
    day = 24 * HOUR  # epoch day 10 is a Sunday, 11 a Monday, 12 a Tuesday

    def spike(device: str, ts: int) -> dict[str, object]:
        return {"kind": "spike", "device_id": device, "tenant_id": "t", "iccid": None, "ts": ts, "end_ts": ts}

    faults = [
        spike("e1", 10 * day + 20 * HOUR),  # less than a day of data before it
        spike("e2", 11 * day + 12 * HOUR),  # the first weekday: its only earlier day is a Sunday
        spike("e3", 12 * day + 12 * HOUR),  # Monday is its reference
        spike("e4", 12 * day + 3 * HOUR),  # UTC: Monday 02:45 is its reference
        spike("e5", 12 * day + 3 * HOUR),  # Los Angeles (UTC-8): Monday 18:45 local, its day before a Sunday
    ]
    zones = {"e5": "America/Los_Angeles"}
    expected = expected_alerts(faults, lambda t, i: "", start_ms=10 * day, timezones=zones)
    assert [x.warmup for x in expected] == [True, True, False, False, True]
    # data from 11 d 02:30: Monday's 02:45 less 30 min (the same time of day +-30 min) is before it
    late = expected_alerts(faults, lambda t, i: "", start_ms=11 * day + 2 * HOUR + HOUR // 2, timezones=zones)
    assert [x.warmup for x in late] == [True, True, False, True, True]
    assert not any(x.warmup for x in expected_alerts(faults, lambda t, i: ""))  # no start given: all scored


def test_alerts_store_rows_give_back_the_transitions_they_were_built_from() -> None:
    from pipeline.anomaly.model import Transition
    from pipeline.sinks.alerts import ALERTS_SCHEMA, alerts_table

    made = [
        Transition(f"id{i}", "t1", f"m{i}", "device", "gap", sev, state, f"s{i % 2}" if i % 3 else "",
                   1_794_000_000_000 + i, 1_794_000_060_000 + i, i + 1, None if i % 2 else 0.5 * i,
                   None if i % 4 == 1 else 2.0, f"message {i}", {"cause": "device"} if i % 2 else {})
        for i, (sev, state) in enumerate((s, st) for s in Severity for st in State)
    ]  # fmt: skip
    table = alerts_table(made, 1_795_000_000_000)
    assert table.schema == ALERTS_SCHEMA and table.num_rows == len(made) == 9
    assert table.column("published_at").to_pylist()[0].year == 2026  # a UTC timestamp, not a bare number
    assert transitions_of(table) == made
    assert transitions_of(alerts_table([], 0)) == []
