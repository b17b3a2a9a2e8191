"""The stream's incremental interval derivation equals one recomputation over all readings.

Readings of a simulated fleet (late and out-of-order ones included) are fed in arrival
order, in small batches, to :class:`IntervalDeriver`, whose store lags one batch behind as
it does when the sink persists batch N while batch N+1 is prepared. The last value written
for every interval must equal the pure function over the full set of readings.
"""

from __future__ import annotations

import random

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.catalogue import load_catalogue
from pipeline.codecs import Decoder, Encoder, SchemaStore, decode_readings
from pipeline.derive import compute_intervals_many, params_frame, register_params, replacements_frame
from pipeline.envelope import RawMessage
from pipeline.flags import Flag
from pipeline.simulate import SimConfig, build_scenario
from pipeline.tenancy import Registry
from pipeline.worker.derive import KEYS, IntervalDeriver

NOW = 1_795_400_000_000
SERIES = {
    "tenant_id": pl.Utf8,
    "device_id": pl.Utf8,
    "quantity": pl.Utf8,
    "ts_ms": pl.Int64,
    "value": pl.Float64,
    "seq": pl.Int64,
}


def _fleet_readings() -> tuple[pl.DataFrame, Registry]:
    store = SchemaStore.load()
    decode = Decoder(store)
    scenario = build_scenario(
        SimConfig(seed=3, tenants=1, sites_per_tenant=2, days=1.0, batch=False), NOW, Encoder(store)
    )
    registry = Registry()
    for m in scenario.registrations:
        registry.put(decode(m.value)[1])
    messages = [
        RawMessage("t", 0, i, m.key, m.value) for i, m in enumerate(scenario.telemetry) if m.topic == "meter.readings"
    ]
    frame, _ = decode_readings(messages, decode)
    cumulative = load_catalogue().cumulative_codes()
    frame = frame.filter(
        pl.col("quantity").is_in(cumulative),
        pl.col("value").is_finite(),
        pl.col("ts_ms").is_between(NOW - 30 * 86_400_000, NOW),
    )
    frame = frame.filter(
        pl.col("device_id").map_elements(lambda d: registry.get(d) is not None, return_dtype=pl.Boolean)
    )
    tenants = {d: registry.get(d).tenant_id for d in frame["device_id"].unique()}  # type: ignore[union-attr]
    frame = frame.with_columns(
        tenant_id=pl.col("device_id").replace_strict(tenants), src_offset=pl.col("msg_idx").cast(pl.UInt64)
    )
    return frame.unique(["device_id", "quantity", "ts_ms"], keep="first", maintain_order=True), registry


@pytest.mark.parametrize("batch_messages", [300, 2000])
def test_incremental_intervals_equal_the_full_recompute_with_a_lagging_store(batch_messages: int) -> None:
    catalogue = load_catalogue()
    frame, registry = _fleet_readings()
    stored: list[pl.DataFrame] = []

    def fetch(devices: list[str], quantities: list[str], since_ms: int) -> pl.DataFrame:
        rows = pl.concat(stored) if stored else pl.DataFrame(schema=SERIES)
        return rows.filter(
            pl.col("device_id").is_in(devices), pl.col("quantity").is_in(quantities), pl.col("ts_ms") >= since_ms
        )

    deriver = IntervalDeriver(catalogue, registry, fetch)
    written, pending = [], None
    order = sorted(frame["msg_idx"].unique().to_list())
    for n, start in enumerate(range(0, len(order), batch_messages)):
        part = frame.filter(pl.col("msg_idx").is_in(order[start : start + batch_messages]))
        rows = pl.from_arrow(deriver(part, NOW)["intervals_store"])
        written.append(rows.with_columns(batch=pl.lit(n)))  # type: ignore[union-attr]
        if pending is not None:
            stored.append(pending)  # batch N reaches the store only after batch N+1 was derived
        pending = part.select(*KEYS, "ts_ms", "value", seq=pl.col("src_offset").cast(pl.Int64))
    stored.append(pending)

    latest = (
        pl.concat(written)
        .with_columns(interval_start_ms=pl.col("interval_start").dt.epoch("ms"))
        .sort("batch")
        .group_by([*KEYS, "interval_start_ms"])
        .agg(pl.col("measured", "estimated", "flags").last())
    )
    readings = pl.concat(stored)
    params = {
        k: register_params(k[2], registry.get(k[1]), catalogue) for k in readings.select(KEYS).unique().iter_rows()
    }
    full = compute_intervals_many(
        readings, params_frame(params, KEYS), keys=KEYS, replacements=replacements_frame(params, KEYS)
    ).intervals
    joined = latest.join(full, on=[*KEYS, "interval_start_ms"], how="full", suffix="_full")
    assert joined.height == full.height == latest.height > 500
    assert (joined["measured"] - joined["measured_full"]).abs().max() < 1e-6  # type: ignore[operator]
    assert (joined["estimated"] - joined["estimated_full"]).abs().max() < 1e-6  # type: ignore[operator]
    assert (joined["flags"] == joined["flags_full"]).all()


# -- the in-order path (running totals) and the read-back path, on random arrival orders ------------------------

QTY = "active_energy_import"
CEILING = 100_000.0
PERIOD_MS = 300_000


def _registry(devices: list[str]) -> Registry:
    registry = Registry()
    for d in devices:
        registry.put({"subject_id": d, "tenant_id": "t1", "site_id": "s1", "kind": "electricity_meter",
                      "expected_period_s": PERIOD_MS // 1000, "register_ceilings": {QTY: CEILING}})  # fmt: skip
    return registry


def _series(rnd, devices: list[str], steps: int) -> list[tuple[str, int, float]]:
    """(device, ts, value): mostly regular polls, some gaps, rollovers and resets, all within a day."""
    out = []
    for d in devices:
        t, v = NOW - 86_400_000 + rnd.randrange(PERIOD_MS), rnd.uniform(0, CEILING)
        for _ in range(steps):
            t += rnd.choice([PERIOD_MS] * 6 + [rnd.randrange(1_000, PERIOD_MS), 3 * PERIOD_MS + rnd.randrange(10**6)])
            r = rnd.random()
            v = 0.0 if r < 0.03 else (v + rnd.uniform(0, 500)) % CEILING  # a reset, else maybe a rollover
            out.append((d, t, v))
    return out


def _arrival(rnd, readings: list[tuple[str, int, float]], late: float) -> list[tuple[str, int, float, int]]:
    """Readings with their offsets (seq) in arrival order: by time, a share ``late`` of them delayed."""
    by_time = sorted(readings, key=lambda r: r[1])
    keyed = [(i + (rnd.randrange(1, 60) if rnd.random() < late else 0), i, r) for i, r in enumerate(by_time)]
    return [(*r, seq) for seq, (_, _, r) in enumerate(sorted(keyed))]


def _frame(rows: list[tuple[str, int, float, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        [("t1", d, QTY, ts, v, seq) for d, ts, v, seq in rows],
        schema={**SERIES, "seq": pl.UInt64}, orient="row",
    ).rename({"seq": "src_offset"})  # fmt: skip


def _final(stored: list[pl.DataFrame]) -> pl.DataFrame:
    """What readings_store FINAL returns: one row per key, the lowest source offset wins."""
    rows = pl.concat(stored) if stored else pl.DataFrame(schema=SERIES)
    return rows.sort("seq").unique([*KEYS, "ts_ms"], keep="first")


def _stream(batches: list[list], registry: Registry, *, restart_at: int = -1, redeliver: int = -1):
    """Feed ``batches`` as the worker does: one batch persists while the next is derived."""
    catalogue = load_catalogue()
    stored: list[pl.DataFrame] = []

    def fetch(devices: list[str], quantities: list[str], since_ms: int) -> pl.DataFrame:
        rows = _final(stored)
        return rows.filter(pl.col("device_id").is_in(devices), pl.col("quantity").is_in(quantities),
                           pl.col("ts_ms") >= since_ms)  # fmt: skip

    deriver, written, pending, reads = IntervalDeriver(catalogue, registry, fetch), [], None, 0
    feed = list(batches) + ([batches[redeliver]] if 0 <= redeliver < len(batches) else [])
    for n, batch in enumerate(feed):
        if n == restart_at:  # a restarted worker: the batch in flight was persisted, the state is gone
            stored.extend([pending] if pending is not None else [])
            pending, reads = None, reads + deriver.reads
            deriver = IntervalDeriver(catalogue, registry, fetch)
        part = _frame(batch)
        out = deriver(part, NOW + n)
        written.append(pl.from_arrow(out["intervals_store"]).with_columns(batch=pl.lit(n)))  # type: ignore[union-attr]
        if pending is not None:
            stored.append(pending)
        pending = part.select(*KEYS, "ts_ms", "value", seq=pl.col("src_offset").cast(pl.Int64))
    stored.append(pending)
    latest = (pl.concat(written).with_columns(interval_start_ms=pl.col("interval_start").dt.epoch("ms"))
              .sort("batch").group_by([*KEYS, "interval_start_ms"]).agg(pl.all().last()))  # fmt: skip
    return latest, _final(stored), reads + deriver.reads


def _full(readings: pl.DataFrame, registry: Registry) -> pl.DataFrame:
    catalogue = load_catalogue()
    series = readings.select(KEYS).unique().iter_rows()
    params = {k: register_params(k[2], registry.get(k[1]), catalogue) for k in series}
    return compute_intervals_many(readings, params_frame(params, KEYS), keys=KEYS,
                                  replacements=replacements_frame(params, KEYS)).intervals  # fmt: skip


def _assert_same_bits(latest: pl.DataFrame, full: pl.DataFrame) -> None:
    cols = ["measured", "estimated", "flags", "n_readings"]
    joined = latest.join(full, on=[*KEYS, "interval_start_ms"], how="full", suffix="_full", coalesce=True)
    assert joined.height == full.height == latest.height
    for col in cols:  # bit for bit: continued sums equal recomputed ones
        assert (joined[col].cast(full.schema[col]) == joined[f"{col}_full"]).all(), col


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False), st.sampled_from([0.0, 0.05, 0.3]), st.integers(1, 40),
       st.booleans(), st.booleans())  # fmt: skip
def test_any_arrival_order_and_batching_gives_the_full_recompute_bit_for_bit(
    rnd, late: float, max_batch: int, restart: bool, redeliver: bool
) -> None:
    devices = [f"m{i}" for i in range(3)]
    registry = _registry(devices)
    rows = _arrival(rnd, _series(rnd, devices, 40), late)
    batches, i = [], 0
    while i < len(rows):
        size = rnd.randint(1, max_batch)
        batches.append(rows[i : i + size])
        i += size
    latest, stored, reads = _stream(batches, registry, restart_at=rnd.randrange(len(batches)) if restart else -1,
                                    redeliver=rnd.randrange(len(batches)) if redeliver else -1)  # fmt: skip
    _assert_same_bits(latest, _full(stored, registry))
    assert 1 <= reads <= len(batches) + 2


def test_in_order_batches_read_back_only_for_series_not_seen_yet() -> None:
    rnd = random.Random(5)
    devices = [f"m{i}" for i in range(20)]
    registry = _registry(devices)
    rows = _arrival(rnd, _series(rnd, devices, 30), 0.0)
    batches = [rows[i : i + 50] for i in range(0, len(rows), 50)]
    latest, stored, reads = _stream(batches, registry)
    _assert_same_bits(latest, _full(stored, registry))
    seen: set[str] = set()
    expected = 0
    for batch in batches:
        devices_in = {d for d, *_ in batch}
        expected += bool(devices_in - seen)
        seen |= devices_in
    assert reads == expected < len(batches)


def test_registry_changes_reach_the_next_batch() -> None:
    registry = _registry(["m0"])
    deriver = IntervalDeriver(load_catalogue(), registry, lambda d, q, s: pl.DataFrame(schema=SERIES))
    t0 = NOW - 3_600_000

    def derive(rows: list[tuple[str, int, float, int]], now_ms: int) -> pl.DataFrame:
        frame = pl.from_arrow(deriver(_frame(rows), now_ms)["intervals_store"])
        assert isinstance(frame, pl.DataFrame)
        return frame.with_columns(start=pl.col("interval_start").dt.epoch("ms"))

    assert set(derive([("m0", t0, 10.0, 1), ("m0", t0 + PERIOD_MS, 20.0, 2)], NOW)["site_id"]) == {"s1"}
    registry.put({"subject_id": "m0", "tenant_id": "t1", "site_id": "s2", "kind": "electricity_meter",
                  "expected_period_s": 60, "register_ceilings": {QTY: CEILING}})  # fmt: skip
    second = derive([("m0", t0 + 2 * PERIOD_MS, 30.0, 3)], NOW + 1)
    assert set(second["site_id"]) == {"s2"}
    # the expected period is now 60 s: the 300 s step is a gap, estimated, no longer measured
    last = second.filter(pl.col("start") == (t0 + 2 * PERIOD_MS) // 900_000 * 900_000)
    assert (last["flags"] & int(Flag.ESTIMATED) != 0).all() and last["estimated"].sum() > 0
    assert deriver.reads == 1 and deriver.series == 1


def test_registry_change_log_is_bounded_and_a_lagging_cache_refreshes_everything(monkeypatch) -> None:
    import pipeline.tenancy.registry as registry_module
    from pipeline.catalogue import load_catalogue
    from pipeline.worker.derive_facts import DeriveFacts

    monkeypatch.setattr(registry_module, "CHANGE_LOG_LIMIT", 3)
    reg = Registry()
    facts = DeriveFacts(load_catalogue(), reg)
    for d in ("a", "b"):
        reg.put({"subject_id": d, "subject_type": "device", "kind": "electricity_meter", "tenant_id": "t",
                 "site_id": "s1", "timezone": "UTC", "updated_at": 0})  # fmt: skip
    facts.refresh(pl.Series(["a", "b"]))
    assert reg.changed_since(0) == ["a", "b"]
    for i in range(8):  # 8 more changes, all of b: the log keeps between 3 and 6 of them
        reg.put({"subject_id": "b", "subject_type": "device", "kind": "electricity_meter", "tenant_id": "t",
                 "site_id": f"s{i + 2}", "timezone": "UTC", "updated_at": i + 1})  # fmt: skip
    assert reg.version == 10 and reg.changed_since(0) is None and reg.changed_since(9) == ["b"]
    assert reg.changed_since(reg.version - 3) == ["b"] * 3
    facts.refresh(pl.Series(["a"]))  # behind the log: every device is looked up again
    sites = dict(facts.devices().collect().select("device_id", "site_id").iter_rows())
    assert sites == {"a": "s1", "b": "s9"}
    assert reg.changed_since(reg.version) == []


# -- a partition that leaves this worker and comes back ----------------------------------------------------------


def _handover(batches: list[list], registry: Registry, *, follow_ownership: bool) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Worker A derives batches 0–2, worker B (same store) 3–5 while A holds other partitions, then the
    partition returns to A for 6–8. A's stage is built through :class:`Ownership` when ``follow_ownership``."""
    from pipeline.worker.ownership import Ownership

    catalogue = load_catalogue()
    stored: list[pl.DataFrame] = []

    def fetch(devices: list[str], quantities: list[str], since_ms: int) -> pl.DataFrame:
        return _final(stored).filter(pl.col("device_id").is_in(devices), pl.col("quantity").is_in(quantities),
                                     pl.col("ts_ms") >= since_ms)  # fmt: skip

    ownership = Ownership()
    a = ownership.follow("meter.readings", lambda: IntervalDeriver(catalogue, registry, fetch))
    b = IntervalDeriver(catalogue, registry, fetch)
    assert a is not None
    ownership.assigned([("meter.readings", 0), ("meter.readings", 1)])
    written = []
    for n, batch in enumerate(batches):
        if n == 3:
            ownership.assigned([("meter.readings", 1)])  # partition 0 goes to B
        if n == 6:
            ownership.assigned([("meter.readings", 0), ("meter.readings", 1)] if follow_ownership else [])
        part = _frame(batch)
        out = (b if 3 <= n < 6 else a)(part, NOW + n)  # each batch is stored before the next is derived
        written.append(pl.from_arrow(out["intervals_store"]).with_columns(batch=pl.lit(n)))  # type: ignore[union-attr]
        stored.append(part.select(*KEYS, "ts_ms", "value", seq=pl.col("src_offset").cast(pl.Int64)))
    latest = (pl.concat(written).with_columns(interval_start_ms=pl.col("interval_start").dt.epoch("ms"))
              .sort("batch").group_by([*KEYS, "interval_start_ms"]).agg(pl.all().last()))  # fmt: skip
    return latest, _final(stored)


def test_a_partition_that_comes_back_is_read_back_not_continued_from_stale_state() -> None:
    rnd = random.Random(11)
    devices = [f"m{i}" for i in range(4)]
    registry = _registry(devices)
    rows = _arrival(rnd, _series(rnd, devices, 36), 0.0)
    batches = [rows[i : i + len(rows) // 9 + 1] for i in range(0, len(rows), len(rows) // 9 + 1)]
    assert len(batches) == 9
    latest, stored = _handover(batches, registry, follow_ownership=True)
    _assert_same_bits(latest, _full(stored, registry))
    # the control: continuing A's state from before the handover restates B's intervals wrongly
    stale, stored = _handover(batches, registry, follow_ownership=False)
    with pytest.raises(AssertionError):
        _assert_same_bits(stale, _full(stored, registry))
