"""Alert lifecycle: one id per episode, transitions only on change, restart-safe, policy-driven."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.anomaly import Policy, Severity, State, evaluations
from pipeline.anomaly.lifecycle import AlertTracker, Episode, alert_id
from pipeline.errors import ConfigError

MIN = 60_000


def evals(rule: str, rows: list[tuple[int, bool, Severity]], subject: str = "m1", tenant: str = "t1") -> pl.DataFrame:
    frame = pl.DataFrame(
        {
            "ts_ms": [r[0] for r in rows],
            "firing": [r[1] for r in rows],
            "severity": [int(r[2]) for r in rows],
            "observed": [r[0] / MIN for r in rows],
        }
    )
    return evaluations(frame, tenant_id=tenant, site_id="s1", subject_id=subject, subject_type="device", rule=rule)


W, C = Severity.WARNING, Severity.CRITICAL


class Store(dict):
    def write(self, key: str, value: bytes | None) -> None:
        if value is None:
            self.pop(key, None)
        else:
            self[key] = value


def test_raise_repeat_update_clear_with_one_id() -> None:
    tracker = AlertTracker(Policy())
    out = tracker.apply(evals("voltage_out_of_band", [(0, True, W), (10 * MIN, True, W), (20 * MIN, True, W)]), 0)
    assert [t.state for t in out] == [State.RAISED]  # repeats are not published
    assert out[0].count == 1 and out[0].first_seen == 0
    out += tracker.apply(evals("voltage_out_of_band", [(30 * MIN, True, C)]), 0)
    assert out[-1].state is State.UPDATED and out[-1].severity is C and out[-1].count == 4
    out += tracker.apply(evals("voltage_out_of_band", [(40 * MIN, False, W), (50 * MIN, False, W)]), 0)
    assert len(out) == 2  # two quiet evaluations: still open (clear_after = 3)
    out += tracker.apply(evals("voltage_out_of_band", [(60 * MIN, False, W)]), 0)
    assert [t.state for t in out] == [State.RAISED, State.UPDATED, State.CLEARED]
    assert len({t.alert_id for t in out}) == 1
    assert out[-1].last_seen == 30 * MIN and out[-1].count == 4
    assert out[0].alert_id == alert_id("t1|m1|voltage_out_of_band", 0)  # stable across replays
    assert tracker.open_count == 0


def test_a_firing_evaluation_resets_the_clear_count() -> None:
    tracker = AlertTracker(Policy())
    rows = [(0, True, W), (1, False, W), (2, False, W), (3, True, W), (4, False, W), (5, False, W)]
    out = tracker.apply(evals("low_power_factor", rows), 0)
    assert [t.state for t in out] == [State.RAISED]
    assert [t.state for t in tracker.apply(evals("low_power_factor", [(6, False, W)]), 0)] == [State.CLEARED]


def test_restart_neither_reraises_nor_forgets() -> None:
    store = Store()
    first = AlertTracker(Policy(), store, store.write)
    raised = first.apply(evals("flatline", [(0, True, W), (5 * MIN, True, W)]), 0)
    first.persist()
    assert len(store) == 1 and Episode.loads(next(iter(store.values()))).count == 2

    second = AlertTracker(Policy(), store, store.write)  # a restarted worker, state from its table
    assert second.apply(evals("flatline", [(10 * MIN, True, W)]), 0) == []  # no second raise
    out = second.apply(evals("flatline", [(15 * MIN, False, W), (20 * MIN, False, W), (25 * MIN, False, W)]), 0)
    assert [t.state for t in out] == [State.CLEARED] and out[0].alert_id == raised[0].alert_id
    assert out[0].count == 3
    second.persist()
    assert store == {}


def test_redelivered_evaluations_are_ignored() -> None:
    tracker = AlertTracker(Policy())
    batch = evals("spike", [(0, True, W), (15 * MIN, False, W)])
    assert len(tracker.apply(batch, 0)) == 1
    assert tracker.apply(batch, 0) == []  # the same batch again: nothing new


def test_event_rules_clear_after_the_quiet_period_of_stream_time() -> None:
    tracker = AlertTracker(Policy({"negative_delta": {"quiet_period_s": 600}}))
    out = tracker.apply(evals("negative_delta", [(0, True, W)]), 0)
    assert [t.state for t in out] == [State.RAISED]
    assert tracker.apply(pl.DataFrame(), 9 * MIN) == []
    out = tracker.apply(pl.DataFrame(), 10 * MIN)
    assert [t.state for t in out] == [State.CLEARED]


def test_policy_overrides_clear_after_per_tenant() -> None:
    policy = Policy(tenants={"t2": {"gap": {"clear_after": 1}}})
    tracker = AlertTracker(policy)
    rows = [(0, True, W), (1, False, W)]
    assert [t.state for t in tracker.apply(evals("gap", rows, tenant="t1"), 0)] == [State.RAISED]
    assert [t.state for t in tracker.apply(evals("gap", rows, tenant="t2"), 0)] == [State.RAISED, State.CLEARED]


def test_a_rule_is_uniform_only_where_no_tenant_or_site_overrides_it() -> None:
    policy = Policy(rules={"gap": {"period_factor": 3}}, tenants={"t2": {"spike": {"threshold": 5.0}}},
                    sites={("t1", "s1"): {"flatline": {"enabled": False}}})  # fmt: skip
    uniform = policy.uniform("gap")
    assert uniform is not None and uniform["period_factor"] == 3 == policy.params("gap", "t9", "s9")["period_factor"]
    assert policy.uniform("spike") is None and policy.uniform("flatline") is None


def test_annotate_publishes_an_update_once() -> None:
    tracker = AlertTracker(Policy())
    (raised,) = tracker.apply(evals("gap", [(0, True, W)]), 0)
    t = tracker.annotate(raised.key, {"cause": "connectivity"})
    assert t is not None and t.state is State.UPDATED and t.attributes == {"cause": "connectivity"}
    assert tracker.annotate(raised.key, {"cause": "connectivity"}) is None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from([W, C])), min_size=1, max_size=40), st.data())
def test_batch_boundaries_do_not_change_transitions(verdicts: list, data: st.DataObject) -> None:
    rows = [(i * MIN, f, s) for i, (f, s) in enumerate(verdicts)]
    whole = AlertTracker(Policy()).apply(evals("frequency_out_of_band", rows), 0)
    cuts = sorted(data.draw(st.sets(st.integers(1, len(rows)), max_size=5)))
    split, tracker, lo = [], AlertTracker(Policy()), 0
    for hi in [*cuts, len(rows)]:
        split += tracker.apply(evals("frequency_out_of_band", rows[lo:hi]), 0)
        lo = hi
    assert split == whole


def test_policy_file_errors_name_the_place(tmp_path) -> None:
    f = tmp_path / "p.toml"
    f.write_text("[tenants.acme.rules.spike]\nthreshold = -1\n")
    with pytest.raises(ConfigError, match=r"tenants\.acme\.rules\.spike\.threshold"):
        Policy.load(f)
    f.write_text("[rules.spikes]\nthreshold = 3\n")
    with pytest.raises(ConfigError, match="unknown rule 'spikes'"):
        Policy.load(f)
    f.write_text("[rules.gap]\nperiod_factors = 3\n")
    with pytest.raises(ConfigError, match="unknown parameter 'period_factors'"):
        Policy.load(f)
    f.write_text('[tenants.acme.sites.p1.rules.voltage_out_of_band]\nnominal_v = 240\nenabled = false\n')
    policy = Policy.load(f)
    assert policy.params("voltage_out_of_band", "acme", "p1")["nominal_v"] == 240.0
    assert policy.params("voltage_out_of_band", "acme", "p2")["nominal_v"] == 230.0
    assert policy.params("voltage_out_of_band", "acme", "p1")["enabled"] is False


def test_the_example_policy_file_is_valid() -> None:
    from pathlib import Path

    policy = Policy.load(Path(__file__).resolve().parents[2] / "config" / "alert_policy.example.toml")
    assert policy.params("gap", "tenant-01", "any")["period_factor"] == 3.0
    assert policy.params("generator_unexpected_run", "tenant-02", "")["enabled"] is False
