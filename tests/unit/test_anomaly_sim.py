"""SIM anomaly rules: per-rule series, batching/order invariance, and detection quality on the simulator.

The quality test runs the simulator's SIM usage (8 days, so the data spike has history)
through the real decode → validate → tag → pseudonymise stages (as the worker's
``SimUsageProcessor`` does), evaluates every SIM rule, turns contiguous firing evaluations
per (SIM, rule) into episodes and prints precision and recall per rule against the
injected faults (ground truth).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Sequence
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from pipeline.anomaly import EVALUATION_SCHEMA, RULES, Context, Policy, SimBatch
from pipeline.anomaly.attribution import attribute_gap
from pipeline.anomaly.sim_rules import (
    SimDataSpike,
    SimDormantWake,
    SimImeiChange,
    SimOverPlan,
    SimRoaming,
    SimSmsFlood,
    sim_rules,
)
from pipeline.codecs import Decoder, Encoder, SchemaStore, decode_registrations, decode_sim_usage
from pipeline.envelope import RawMessage
from pipeline.simulate import REGISTRY_TOPIC, SIM_USAGE_TOPIC, Scenario, SimConfig, build_scenario
from pipeline.tenancy import Pseudonymizer, Registry, tag_frame
from pipeline.validation import SimUsageValidator

NOW = 1_795_000_123_456  # 2026-11-18, as in test_simulate
H = 3_600_000
D = 86_400_000
T0 = 1_794_268_800_000  # 2026-11-10T00:00Z
ICCID = "89441000000000000001"
SIM_SCHEMA: dict[str, pl.DataType] = {
    "tenant_id": pl.Utf8(), "site_id": pl.Utf8(), "sim_id": pl.Utf8(), "imei_id": pl.Utf8(),
    "period_start_ms": pl.Int64(), "period_end_ms": pl.Int64(), "bytes_up": pl.UInt64(), "bytes_down": pl.UInt64(),
    "sms_mo": pl.UInt32(), "sms_mt": pl.UInt32(), "voice_seconds": pl.UInt32(), "csd_seconds": pl.UInt32(),
    "sessions": pl.UInt32(), "mcc": pl.Utf8(), "mnc": pl.Utf8(), "home_mcc": pl.Utf8(), "home_mnc": pl.Utf8(),
    "roaming": pl.UInt8(), "plan_id": pl.Utf8(), "iccid": pl.Utf8(),
}  # fmt: skip


# -- helpers ----------------------------------------------------------------------------------------------------


def _registry(*sims: tuple[str, dict[str, Any]]) -> Registry:
    reg = Registry()
    for iccid, extra in sims or ((ICCID, {}),):
        reg.put({"subject_id": iccid, "subject_type": "sim", "kind": "sim", "tenant_id": "t1", "site_id": "s1",
                 "plan_allowance_bytes": 500_000_000, "plan_cycle_start_day": 1, "stationary": True,
                 **extra})  # fmt: skip
    return reg


def _row(hour: int, **kw: Any) -> dict[str, Any]:
    start = T0 + hour * H
    row = {"tenant_id": "t1", "site_id": "s1", "sim_id": "sim-a", "imei_id": "imei-1", "period_start_ms": start,
           "period_end_ms": start + H, "bytes_up": 40_000, "bytes_down": 8_000, "sms_mo": 0, "sms_mt": 0,
           "voice_seconds": 0, "csd_seconds": 0, "sessions": 2, "mcc": "234", "mnc": "15", "home_mcc": "234",
           "home_mnc": "15", "roaming": 0, "plan_id": "uk-iot", "iccid": ICCID}  # fmt: skip
    row.update(kw)
    row["roaming"] = int(row["mcc"] != row["home_mcc"])
    return row


def _frame(rows: Iterable[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=SIM_SCHEMA, orient="row")


def _run(rule: Any, rows: Sequence[dict[str, Any]] | pl.DataFrame, *, registry: Registry | None = None,
         policy: Policy | None = None, batches: int = 1) -> pl.DataFrame:  # fmt: skip
    frame = rows if isinstance(rows, pl.DataFrame) else _frame(rows)
    ctx = Context(policy or Policy(), registry if registry is not None else _registry(), NOW)
    size = max(1, -(-frame.height // batches))
    outs = [rule(SimBatch(frame.slice(i, size)), ctx) for i in range(0, max(frame.height, 1), size)]
    out = pl.concat(outs)
    assert out.schema == pl.Schema(EVALUATION_SCHEMA)
    return out


def _fired(out: pl.DataFrame) -> list[int]:
    return sorted(out.filter("firing")["ts_ms"].to_list())


# -- per rule: a series that must fire and a nearby one that must not -------------------------------------------------


def test_roaming_fires_on_a_stationary_sim_abroad_only() -> None:
    rows = [_row(h) for h in range(6)] + [_row(h, mcc="208", mnc="01") for h in range(6, 9)] + [_row(9)]
    out = _run(SimRoaming(), rows)
    assert _fired(out) == [T0 + h * H for h in (6, 7, 8)]
    assert out.height == 10 and set(out["subject_id"]) == {"sim-a"} and set(out["subject_type"]) == {"sim"}
    assert "208-01" in out.filter("firing")["message"][0] and ICCID not in "".join(out["message"].to_list())
    mobile = _registry((ICCID, {"stationary": False}))
    assert _fired(_run(SimRoaming(), rows, registry=mobile)) == []  # a mobile SIM may roam
    national = [_row(h, mnc="30") for h in range(6)]  # national roaming: same MCC
    assert _fired(_run(SimRoaming(), national)) == []


def test_imei_change_fires_once_at_the_new_imei() -> None:
    rows = [_row(h) for h in range(5)] + [_row(h, imei_id="imei-2") for h in range(5, 10)]
    out = _run(SimImeiChange(), rows)
    assert _fired(out) == [T0 + 5 * H] and out.height == 1  # event rule: firing rows only
    assert out["severity"][0] == 3
    same = [_row(h, imei_id=None if h in (3, 4) else "imei-1") for h in range(10)]  # no IMEI reported ≠ a change
    assert _fired(_run(SimImeiChange(), same)) == []
    # late and out of order: the change is found in event-time order, once
    late = rows[:4] + rows[5:] + [rows[4]]
    assert _fired(_run(SimImeiChange(), late, batches=3)) == [T0 + 5 * H]


def test_dormant_wake_after_30_silent_days_not_29() -> None:
    def series(silent_days: int) -> list[dict[str, Any]]:
        wake = 2 + silent_days * 24
        return [_row(0), _row(1)] + [_row(h) for h in range(wake, wake + 50)]  # no records while dormant

    out = _run(SimDormantWake(), series(31))
    assert _fired(out) == [T0 + (2 + 31 * 24) * H]
    assert out["observed"][0] == pytest.approx(31.0) and out["threshold"][0] == 30
    assert _fired(_run(SimDormantWake(), series(29))) == []
    silent = [_row(0)] + [_row(h, sessions=0, bytes_up=0, bytes_down=0) for h in range(1, 31 * 24)]
    silent += [_row(h) for h in range(31 * 24, 31 * 24 + 50)]  # silent records count as silence too
    assert _fired(_run(SimDormantWake(), silent, batches=4)) == [T0 + 31 * 24 * H]
    short = Policy(rules={"sim_dormant_wake": {"dormant_days": 1}})
    assert len(_fired(_run(SimDormantWake(), series(2), policy=short))) == 1


def test_sms_flood_over_the_trailing_24_hours() -> None:
    out = _run(SimSmsFlood(), [_row(h, sms_mo=5) for h in range(30)])  # 120 in 24 h from hour 20 on
    assert _fired(out) == [T0 + h * H for h in range(20, 30)]
    assert out.height == 30 and out.filter("firing")["observed"][0] == 105  # one row per record evaluated
    assert _fired(_run(SimSmsFlood(), [_row(h, sms_mo=4) for h in range(30)])) == []  # 96 in any 24 h
    burst = [_row(h, sms_mo=25 if 10 <= h < 16 else 0) for h in range(48)]  # the simulator's fault
    assert _fired(_run(SimSmsFlood(), burst, batches=5)) == [T0 + h * H for h in range(14, 35)]


def _daily(days: int, **spike: Any) -> list[dict[str, Any]]:
    rng = random.Random(3)
    rows = [_row(h, bytes_up=40_000 + rng.randrange(4_000)) for h in range(days * 24)]
    for h, extra in spike.items():
        i = int(h.removeprefix("h"))
        rows[i] = {**rows[i], "bytes_up": rows[i]["bytes_up"] + extra}
    return rows


def test_data_spike_fires_on_the_spike_day_once_complete() -> None:
    out = _run(SimDataSpike(), _daily(9, h180=30_000_000))  # day 7 (hour 180) +30 MB
    assert _fired(out) == [T0 + 7 * D]
    row = out.filter("firing").row(0, named=True)
    assert row["observed"] > 30e6 and 1e6 < row["threshold"] < 3e6 and "robust z" in row["message"]
    assert sorted(out["ts_ms"]) == [T0 + d * D for d in range(3, 8)]  # ≥ 3 days of history; day 8 still open
    assert _fired(_run(SimDataSpike(), _daily(9, h180=30_000_000)[: 7 * 24 + 20])) == []  # day 7 not complete
    # a statistically huge but small increase (+0.8 MB on ~1.1 MB a day) stays under the 1 MB floor
    assert _fired(_run(SimDataSpike(), _daily(9, h180=800_000))) == []
    assert _fired(_run(SimDataSpike(), _daily(9, h180=1_300_000), batches=6)) == [T0 + 7 * D]


def test_over_plan_warning_then_critical_and_a_new_cycle() -> None:
    reg = _registry((ICCID, {"plan_allowance_bytes": 10_000_000, "plan_cycle_start_day": 15}))
    rows = [_row(h, bytes_up=1_000_000, bytes_down=0) for h in range(10)]  # hour 0 = Nov 10: cycle Oct 15 – Nov 14
    out = _run(SimOverPlan(), rows, registry=reg)
    fired = out.filter("firing")
    assert fired["ts_ms"].to_list() == [T0 + h * H for h in (7, 8, 9)]  # 8 MB → warning; 10 MB → critical
    assert fired["severity"].to_list() == [2, 2, 3] and fired["observed"].to_list() == [0.8, 0.9, 1.0]
    assert fired["threshold"].to_list() == [0.8, 0.8, 1.0] and "10.0 MB of a 10.0 MB plan" in fired["message"][2]
    assert out.height == 10  # one row per record (re-evaluations only when the outcome changes)
    assert _fired(_run(SimOverPlan(), rows[:7], registry=reg)) == []  # 7 MB: 70 %
    nov15 = 5 * 24
    new_cycle = rows + [_row(h, bytes_up=1_000_000, bytes_down=0) for h in range(nov15, nov15 + 4)]
    out = _run(SimOverPlan(), new_cycle, registry=reg, batches=3)
    assert out.filter(pl.col("ts_ms") >= T0 + nov15 * H)["firing"].to_list() == [False] * 4  # cycle restarts
    no_plan = _registry((ICCID, {"plan_allowance_bytes": None}))
    assert _run(SimOverPlan(), rows, registry=no_plan).height == 0


def test_disabled_rule_and_subject_is_the_pseudonym() -> None:
    rows = [_row(h, mcc="208") for h in range(3)]
    off = Policy(tenants={"t1": {"sim_roaming": {"enabled": False}}})
    assert _run(SimRoaming(), rows, policy=off).height == 0
    assert [r.spec.id for r in sim_rules()] == [r for r in RULES if r.startswith("sim_")]


# -- batching and order within 48 h do not change what fires ----------------------------------------------------------


def _spans(rng: random.Random, n: int, hours: int) -> set[int]:
    return {h for b in (rng.randrange(144) for _ in range(n)) for h in range(b, b + hours)}


def _synthetic(rng: random.Random) -> list[dict[str, Any]]:
    """Two SIMs, 6 days: normal hours with injected imei changes, sms bursts, roaming, silence, a spike, holes."""
    rows = []
    for sim, iccid in (("sim-a", ICCID), ("sim-b", "89441000000000000002")):
        imei = "imei-1"
        silent = _spans(rng, 1, 30) | _spans(rng, rng.randrange(3), 6)  # dormant for more than a day (policy)
        changes = {rng.randrange(144) for _ in range(rng.randrange(8))}
        floods = _spans(rng, rng.randrange(2), 6)
        roam = _spans(rng, rng.randrange(2), 4)
        spike = rng.randrange(72, 144)
        for h in range(144):
            if rng.random() < 0.03:  # a hole: the provider sent nothing for that hour
                continue
            imei = f"imei-{h % 3}" if h in changes else imei  # sometimes back to an earlier one
            quiet = h in silent
            rows.append(_row(h, sim_id=sim, iccid=iccid, imei_id=None if rng.random() < 0.05 else imei,
                             bytes_up=0 if quiet else 40_000 + rng.randrange(8_000) + (5_000_000 if h == spike else 0),
                             sessions=0 if quiet else 1 + rng.randrange(3), sms_mo=25 if h in floods else 0,
                             mcc="208" if h in roam else "234"))  # fmt: skip
    return rows


def _arrival(rng: random.Random, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Delivery order: each copy arrives 0–47 h after its period ends (mostly at once); some are sent twice."""
    sent = []
    for r in rows:
        for _ in range(2 if rng.random() < 0.05 else 1):
            delay = rng.randrange(H) if rng.random() < 0.8 else rng.randrange(47 * H)
            sent.append((r["period_end_ms"] + delay, rng.random(), r))
    return [r for _, _, r in sorted(sent, key=lambda s: s[:2])]


def _final(out: pl.DataFrame) -> dict[tuple[str, str, int], tuple[bool, int]]:
    """Last outcome per (SIM, rule, time): (firing, severity)."""
    return {(s, r, t): (f, v) for s, r, t, f, v in out.select("subject_id", "rule", "ts_ms", "firing", "severity")
            .iter_rows()}  # fmt: skip


def _evaluate_all(frames: Sequence[pl.DataFrame], registry: Registry, policy: Policy) -> pl.DataFrame:
    rules, ctx = sim_rules(), Context(policy, registry, NOW)
    return pl.concat([rule(SimBatch(f), ctx) for f in frames for rule in rules])


@given(seed=st.integers(0, 2**32 - 1), cuts=st.lists(st.floats(0, 1), max_size=5), cycle_day=st.integers(1, 31))
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_batching_and_order_within_48h_do_not_change_the_firing_set(seed: int, cuts: list[float],
                                                                     cycle_day: int) -> None:  # fmt: skip
    rng = random.Random(seed)
    rows = _synthetic(rng)
    registry = _registry((ICCID, {"plan_allowance_bytes": 12_000_000, "plan_cycle_start_day": cycle_day}),
                         ("89441000000000000002", {"plan_allowance_bytes": 9_000_000}))  # fmt: skip
    policy = Policy(rules={"sim_dormant_wake": {"dormant_days": 1}})
    reference = _evaluate_all([_frame(sorted(rows, key=lambda r: (r["sim_id"], r["period_start_ms"])))], registry,
                              policy)  # fmt: skip
    sent = _frame(_arrival(rng, rows))
    bounds = sorted({0, sent.height, *(int(c * sent.height) for c in cuts)})
    out = _evaluate_all([sent.slice(a, b - a) for a, b in itertools.pairwise(bounds)], registry, policy)
    fires = lambda o: set(o.filter("firing").select("subject_id", "rule", "ts_ms").iter_rows())  # noqa: E731
    assert fires(out) == fires(reference)
    assert _final(out) == _final(reference)
    # rules that evaluate only final data (and roaming, per record) emit exactly the same rows
    once = pl.col("rule").is_in(["sim_data_spike", "sim_imei_change", "sim_dormant_wake", "sim_roaming"])
    assert set(out.filter(once).iter_rows()) == set(reference.filter(once).iter_rows())


# -- detection quality on the simulator -------------------------------------------------------------------------------


def _sim_usage(sc: Scenario, pseudonyms: Pseudonymizer) -> tuple[pl.DataFrame, Registry]:
    """The worker's sim.usage stages over the scenario, in send order; ``iccid`` kept for registry lookups."""
    decoder = Decoder(SchemaStore.load())

    def raw(topic: str, messages: Sequence[Any]) -> list[RawMessage]:
        return [RawMessage(m.topic, 0, i, m.key, m.value) for i, m in enumerate(messages) if m.topic == topic]

    registry = Registry()
    for _, record, _ in decode_registrations(raw(REGISTRY_TOPIC, sc.registrations), decoder)[0]:
        registry.put(record)
    frame, _ = decode_sim_usage(raw(SIM_USAGE_TOPIC, sc.telemetry), decoder)
    accepted, _ = SimUsageValidator(lateness_ms=30 * D)(frame, NOW)
    tagged, _ = tag_frame(accepted, registry, key="iccid", kind="sim")
    tenants = tagged["tenant_id"].to_list()
    return tagged.with_columns(
        pl.Series("sim_id", [pseudonyms(t, i) for t, i in zip(tenants, tagged["iccid"].to_list(), strict=True)]),
        pl.Series("imei_id", [pseudonyms(t, i) for t, i in zip(tenants, tagged["imei"].to_list(), strict=True)]),
        pl.col("roaming").cast(pl.UInt8),
    ), registry


def episodes(out: pl.DataFrame, policy: Policy | None = None) -> list[tuple[str, str, int, int]]:
    """(SIM, rule, start, end) per episode: contiguous firing evaluations of a condition rule, or firing
    evaluations of an event rule less than its quiet period apart; end = last firing time + one evaluation span."""
    policy = policy or Policy()
    eps = []
    for (sim, rule), g in out.sort("ts_ms").group_by(["subject_id", "rule"], maintain_order=True):
        span = D if rule == "sim_data_spike" else H
        quiet = int(policy.params(rule)["quiet_period_s"]) * 1000
        cur: list[int] | None = None
        for ts, firing in g.select("ts_ms", "firing").iter_rows():
            if firing and cur is not None and (RULES[rule].kind == "condition" or ts - cur[1] <= quiet):
                cur[1] = ts
                continue
            if cur is not None:
                eps.append((sim, rule, cur[0], cur[1] + span))
            cur = [ts, ts] if firing else None
        if cur is not None:
            eps.append((sim, rule, cur[0], cur[1] + span))
    return eps


@pytest.fixture(scope="module")
def simulated() -> tuple[Scenario, pl.DataFrame, Registry, Pseudonymizer]:
    sc = build_scenario(SimConfig(days=8, tenants=2, sites_per_tenant=3), NOW, Encoder(SchemaStore.load()))
    pseudonyms = Pseudonymizer(SecretStr("sim-rules-test"))
    usage, registry = _sim_usage(sc, pseudonyms)
    return sc, usage, registry, pseudonyms


def test_detection_quality_on_the_simulator(simulated: tuple[Scenario, pl.DataFrame, Registry, Pseudonymizer]) -> None:
    sc, usage, registry, pseudonyms = simulated
    ctx = Context(Policy(), registry, NOW)
    out = pl.concat([rule(SimBatch(usage), ctx) for rule in sim_rules()])
    eps = episodes(out)
    faults = [(f["kind"], pseudonyms(f["tenant_id"], f["iccid"]), f["ts"], f["end_ts"] + H)
              for f in sc.truth.faults if f["kind"].startswith("sim_")]  # fmt: skip

    def overlap(f: tuple[str, str, int, int], e: tuple[str, str, int, int]) -> bool:
        return f[1] == e[0] and e[2] < f[3] and f[2] < e[3]

    lines = []
    for rule in (r for r in RULES if r.startswith("sim_")):
        fs, es = [f for f in faults if f[0] == rule], [e for e in eps if e[1] == rule]
        found = sum(any(overlap(f, e) for e in es) for f in fs)
        true = sum(any(overlap(f, e) for f in fs) for e in es)
        recall = found / len(fs) if fs else float("nan")
        precision = true / len(es) if es else float("nan")
        lines.append(
            f"{rule:18s} faults={len(fs):2d} episodes={len(es):2d} recall={recall:.2f} precision={precision:.2f}"
        )
        if fs:
            assert recall >= 0.95 and precision >= 0.90, lines[-1]
        else:
            assert rule in ("sim_over_plan", "sim_dormant_wake") and not es, lines[-1]
    print("\nSIM rules vs injected faults (simulator: 6 sites, 8 days; default parameters):\n" + "\n".join(lines))
    offline = [f for f in faults if f[0] == "sim_offline"]
    assert offline and not [e for e in eps for f in offline if overlap(f, e)]  # a silent SIM raises nothing
    # delivered in send order (late records included) in batches: the same firing evaluations
    batches = [usage.slice(i, 150) for i in range(0, usage.height, 150)]
    streamed = _evaluate_all(batches, registry, Policy())
    assert set(streamed.filter("firing").select("subject_id", "rule", "ts_ms").iter_rows()) == set(
        out.filter("firing").select("subject_id", "rule", "ts_ms").iter_rows()
    )


# -- gap attribution -------------------------------------------------------------------------------------------------


def _usage_records(*spec: tuple[int, int, int]) -> pl.DataFrame:
    """(hour, sessions, bytes) per hourly record from T0."""
    return pl.DataFrame(
        [(T0 + h * H, T0 + (h + 1) * H, s, b, b // 10) for h, s, b in spec],
        schema={"period_start_ms": pl.Int64, "period_end_ms": pl.Int64, "sessions": pl.UInt32,
                "bytes_up": pl.UInt64, "bytes_down": pl.UInt64},
        orient="row",
    )  # fmt: skip


def test_gap_attribution() -> None:
    gap = (T0 + 2 * H + 15 * 60_000, T0 + 5 * H)  # 02:15 – 05:00
    silent = _usage_records((1, 3, 9_000), (2, 0, 0), (3, 0, 0), (4, 0, 0), (5, 2, 7_000))
    assert attribute_gap(*gap, silent) == "connectivity"
    active = _usage_records((1, 3, 9_000), (2, 0, 0), (3, 1, 0), (4, 0, 0), (5, 2, 7_000))
    assert attribute_gap(*gap, active) == "device"
    bytes_only = _usage_records((2, 0, 0), (3, 0, 5_000), (4, 0, 0))
    assert attribute_gap(*gap, bytes_only) == "device"
    assert attribute_gap(*gap, silent.head(3)) == "unknown"  # records end at 04:00: not yet known
    assert attribute_gap(*gap, silent.head(4)) == "connectivity"  # the record ending 05:00 covers the gap
    assert attribute_gap(*gap, silent.clear()) == "unknown"
    # the SIM was online before and after, never during: records touching the edges do not count
    edges = _usage_records((1, 3, 9_000), (5, 2, 7_000))
    assert attribute_gap(T0 + 2 * H, T0 + 5 * H, edges) == "connectivity"
    cols = ("period_start_ms", "period_end_ms")
    as_timestamps = active.with_columns(pl.from_epoch(c, time_unit="ms").alias(c.removesuffix("_ms")) for c in cols)
    assert attribute_gap(*gap, as_timestamps.drop(cols)) == "device"
    with pytest.raises(ValueError):
        attribute_gap(gap[1], gap[0], silent)
