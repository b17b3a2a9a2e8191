"""Simulator: determinism, realism checks, and ground truth = what the real decode/validate/tag stages produce."""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from pipeline.catalogue import load_catalogue
from pipeline.codecs import (
    Decoder,
    Encoder,
    RecordType,
    SchemaStore,
    decode_readings,
    decode_registrations,
    decode_sim_usage,
)
from pipeline.dlms import KeyStore, parse_frames
from pipeline.envelope import RawMessage
from pipeline.errors import BrokerError, CodecError
from pipeline.flags import Flag
from pipeline.simulate import (
    FRAMES_TOPIC,
    READINGS_TOPIC,
    REGISTRY_TOPIC,
    SIM_USAGE_TOPIC,
    GroundTruth,
    OutMessage,
    Scenario,
    SimConfig,
    build_scenario,
    produce,
)
from pipeline.tenancy import Registry, tag_frame
from pipeline.validation import (
    DuplicateFilter,
    ReadingValidator,
    SimUsageValidator,
    check_iccid,
    check_imei,
    check_imsi,
    normalize_msisdn,
)
from pipeline.worker.frames import FramesProcessor

NOW = 1_795_000_123_456  # 2026-11-18, a fixed "now" so that tests do not depend on the clock
DAY = 86_400_000
SMALL = SimConfig(tenants=2, sites_per_tenant=2, days=0.5)


@pytest.fixture(scope="module")
def store() -> SchemaStore:
    return SchemaStore.load()


@pytest.fixture(scope="module")
def encoder(store: SchemaStore) -> Encoder:
    return Encoder(store)


@pytest.fixture(scope="module")
def decoder(store: SchemaStore) -> Decoder:
    return Decoder(store)


@pytest.fixture(scope="module")
def default(encoder: Encoder) -> Scenario:
    return build_scenario(SimConfig(), NOW, encoder)


def _raw(messages: list[OutMessage], topic: str) -> list[RawMessage]:
    return [RawMessage(m.topic, 0, i, m.key, m.value) for i, m in enumerate(messages) if m.topic == topic]


@dataclass
class Observed:
    rows: dict[str, int]
    sim_rows: dict[str, int]
    registry_rows: dict[str, int]
    deadletter: dict[str, int]
    exact: int
    luhn: int
    readings: pl.DataFrame  # accepted, de-duplicated, tagged channel rows
    sim_usage: pl.DataFrame  # accepted, tagged SIM usage rows
    frames: pl.DataFrame | None = None  # readings_store rows decrypted from meter.frames


def run_pipeline(sc: Scenario, config: SimConfig, decoder: Decoder) -> Observed:
    """The real decode → validate → de-duplicate → tag stages over the scenario, in send order.

    Dead letters are counted once per (message, reading in message, reason), as the pipeline emits them.
    """
    regs, rejected = decode_registrations(_raw(sc.registrations, REGISTRY_TOPIC), decoder)
    assert not rejected
    registry = Registry()
    for _, record, _ in regs:
        registry.put(record)
    lateness = int(config.lateness_days * DAY)
    frame, rejected = decode_readings(_raw(sc.telemetry, READINGS_TOPIC), decoder)
    dl: Counter[str] = Counter(r.reason.value for r in rejected)
    accepted, bad = ReadingValidator(load_catalogue(), lateness_ms=lateness)(frame, NOW)
    fresh, conflicts, exact = DuplicateFilter()(accepted)
    tagged, unknown = tag_frame(fresh, registry)
    for f in (bad, conflicts, unknown):
        dl.update(f.unique(["msg_idx", "rec_idx", "reason"])["reason"].to_list())
    sim, rejected = decode_sim_usage(_raw(sc.telemetry, SIM_USAGE_TOPIC), decoder)
    dl.update(r.reason.value for r in rejected)
    sim_ok, sim_bad = SimUsageValidator(lateness_ms=lateness)(sim, NOW)
    dl.update(sim_bad["reason"].to_list())
    sim_tagged, sim_unknown = tag_frame(sim_ok, registry, key="iccid", kind="sim")
    dl.update(sim_unknown["reason"].to_list())
    luhn = sim_tagged.filter((pl.col("flags") & int(Flag.ICCID_LUHN_FAILED)) != 0).height
    rows = Counter(dict(tagged.group_by("tenant_id").len().iter_rows()))
    frames = None
    if sc.dlms_keys:  # encrypted frames: the worker's processor, in one batch, then every partial APDU expired
        catalogue = load_catalogue()
        proc = FramesProcessor(
            KeyStore.from_mapping(sc.dlms_keys),
            catalogue,
            ReadingValidator(catalogue, lateness_ms=lateness),
            registry,
            DuplicateFilter(),
        )
        result = proc(_raw(sc.telemetry, FRAMES_TOPIC), NOW)
        dl.update(r.reason.value for r in result.rejects + proc.expire(NOW + DAY))
        table = result.tables.get("readings_store")
        frames = pl.from_arrow(table) if table is not None else pl.DataFrame({"tenant_id": []}, {"tenant_id": pl.Utf8})
        rows.update(dict(frames.group_by("tenant_id").len().iter_rows()))
    return Observed(
        rows=dict(sorted(rows.items())),
        sim_rows=dict(sim_tagged.group_by("tenant_id").len().sort("tenant_id").iter_rows()),
        registry_rows=dict(Counter(r.tenant_id for r in (registry.get(k) for k, _, _ in regs) if r)),
        deadletter=dict(sorted(dl.items())), exact=exact, luhn=luhn, readings=tagged, sim_usage=sim_tagged,
        frames=frames,
    )  # fmt: skip


def _readings(sc: Scenario, decoder: Decoder) -> Iterator[tuple[OutMessage, dict[str, Any], int | None]]:
    """(message, reading, batch sent_at) of every decodable reading message, in send order."""
    for m in sc.telemetry:
        if m.topic != READINGS_TOPIC:
            continue
        try:
            rt, rec = decoder(m.value)
        except CodecError:
            continue  # message-level faults
        if rt is RecordType.METER_READING:
            yield m, rec, None
        elif rt is RecordType.METER_READING_BATCH:
            for r in rec["readings"]:
                yield m, r, rec["sent_at"]


def _digest(sc: Scenario) -> str:
    h = hashlib.sha256()
    for m in (*sc.registrations, *sc.telemetry):
        h.update(m.topic.encode() + b"\0" + m.key + b"\0" + (m.value or b"") + b"\1")
    h.update(sc.truth.to_json().encode())
    return h.hexdigest()


# -- determinism --------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes_and_truth(encoder: Encoder) -> None:
    a, b = build_scenario(SMALL, NOW, encoder), build_scenario(SMALL, NOW, encoder)
    assert a.registrations == b.registrations
    assert a.telemetry == b.telemetry
    assert a.truth == b.truth
    c = build_scenario(replace(SMALL, seed=8), NOW, encoder)
    assert [m.value for m in c.telemetry] != [m.value for m in a.telemetry]
    assert c.truth.to_json() != a.truth.to_json()


def test_identical_across_processes_with_different_hash_seeds() -> None:
    code = (
        "import hashlib, sys\n"
        "from pipeline.codecs import Encoder, SchemaStore\n"
        "from pipeline.simulate import SimConfig, build_scenario\n"
        f"sc = build_scenario(SimConfig(tenants=2, sites_per_tenant=2, days=0.5), {NOW}, Encoder(SchemaStore.load()))\n"
        "h = hashlib.sha256()\n"
        "for m in (*sc.registrations, *sc.telemetry):\n"
        "    h.update(m.topic.encode() + b'\\0' + m.key + b'\\0' + (m.value or b'') + b'\\1')\n"
        "h.update(sc.truth.to_json().encode())\n"
        "print(h.hexdigest())\n"
    )
    digests = set()
    for hash_seed in ("1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                             timeout=120)  # fmt: skip
        digests.add(out.stdout.strip())
    assert len(digests) == 1
    assert digests == {_digest(build_scenario(SMALL, NOW, Encoder(SchemaStore.load())))}


def test_truth_json_round_trip(default: Scenario) -> None:
    again = GroundTruth.from_json(default.truth.to_json(indent=2))
    assert again == default.truth
    assert json.loads(again.to_json())["expected_rows"]["readings"] == default.truth.expected_rows["readings"]


# -- shape and realism --------------------------------------------------------------------------------------


def test_default_size(default: Scenario) -> None:
    stats = default.truth.stats
    assert 100 <= stats["devices"] + stats["gateways"] + stats["unregistered_devices"] <= 200
    assert 40_000 <= stats["readings"] <= 60_000
    assert stats["sims"] == stats["gateways"] == 9
    assert default.truth.messages[REGISTRY_TOPIC] == len(default.registrations)
    assert sum(default.truth.messages.values()) == len(default.registrations) + len(default.telemetry)


def test_no_timestamp_in_the_future_except_injected(default: Scenario, decoder: Decoder) -> None:
    future = {(f["device_id"], f["ts"]) for f in default.truth.faults if f["kind"] == "future_timestamp"}
    assert future
    seen_future = set()
    for m in default.telemetry:
        if m.topic == SIM_USAGE_TOPIC:
            _, rec = decoder(m.value)
            assert rec["period_start"] < rec["period_end"] <= NOW
    for _, r, sent_at in _readings(default, decoder):
        if r["ts"] > NOW:
            seen_future.add((r["device_id"], r["ts"]))
        assert (sent_at or 0) <= NOW
    assert seen_future == future
    for m in default.registrations:
        assert decoder(m.value)[1]["updated_at"] < default.truth.start_ms


def test_registrations_cover_every_subject(default: Scenario, decoder: Decoder) -> None:
    regs = {r["subject_id"]: r for r in (decoder(m.value)[1] for m in default.registrations)}
    assert [m.key.decode() for m in default.registrations] == list(regs)
    unknown = {f["device_id"] for f in default.truth.faults if f["kind"] == "unknown_device"}
    assert len(unknown) == 2 and not unknown & set(regs)
    frame, _ = decode_readings(_raw(default.telemetry, READINGS_TOPIC), decoder)
    senders = set(frame["device_id"].unique())
    devices = {k for k, r in regs.items() if r["subject_type"] == "device" and r["kind"] != "gateway"}
    assert senders - unknown == devices  # every registered device reports, nobody else but the two newcomers
    for r in regs.values():
        assert regs[r["sim_iccid"]]["kind"] == "sim"
        if r["kind"] != "gateway" and r["subject_type"] == "device":
            assert regs[r["gateway_id"]]["kind"] == "gateway" and r["expected_period_s"] in (300, 900)
        if r["kind"] in ("electricity_meter", "generator"):
            assert r["rated_power_w"] > 0 and r["nominal_voltage"] == 230.0
        if r["kind"] == "generator":
            assert r["tank_capacity_l"] > 0
        if r["kind"] == "sim":
            assert r["plan_allowance_bytes"] > 0 and r["stationary"] is True
    assert any(r["tariff"] for r in regs.values())
    kinds = Counter(r["kind"] for r in regs.values())
    assert set(kinds) == {"sim", "gateway", "electricity_meter", "water_meter", "gas_meter", "generator", "hvac"}


def test_identifiers_are_well_formed(default: Scenario, decoder: Decoder) -> None:
    sims = [decoder(m.value)[1] for m in default.registrations if decoder(m.value)[1]["kind"] == "sim"]
    flagged = {f["iccid"] for f in default.truth.faults if f["kind"] == "iccid_luhn"}
    assert len(flagged) == 1
    for s in sims:
        check = check_iccid(s["subject_id"])
        assert check.valid and check.luhn_ok == (s["subject_id"] not in flagged)
    sim, _ = decode_sim_usage(_raw(default.telemetry, SIM_USAGE_TOPIC), decoder)
    for row in sim.unique("iccid").iter_rows(named=True):
        if check_iccid(row["iccid"]).valid:
            assert check_imsi(row["imsi"]).valid and check_imei(row["imei"]).valid
            assert normalize_msisdn(row["msisdn"]) == row["msisdn"]
            assert check_imsi(row["imsi"]).mcc in ("404", "232", "262")


def test_signals_are_plausible_outside_faults(encoder: Encoder, decoder: Decoder) -> None:
    sc = build_scenario(SimConfig(faults=False, unknown_devices=0, days=1.0), NOW, encoder)
    obs = run_pipeline(sc, SimConfig(), decoder)
    assert obs.deadletter == {} and obs.exact == 0
    r = obs.readings
    stats = r.group_by("quantity").agg(lo=pl.col("value").min(), hi=pl.col("value").max())
    bounds = {q: (lo, hi) for q, lo, hi in stats.iter_rows()}
    for phase in (1, 2, 3):
        assert 207 < bounds[f"voltage_l{phase}"][0] and bounds[f"voltage_l{phase}"][1] < 253
    assert 49.5 < bounds["frequency"][0] and bounds["frequency"][1] < 50.5
    assert bounds["active_power"][0] < 0  # solar export somewhere
    hourly_pf = r.filter(pl.col("quantity") == "power_factor").group_by("device_id", pl.col("ts_ms") // 3_600_000)
    assert hourly_pf.agg(pl.col("value").mean())["value"].min() >= 0.9
    registers = ("active_energy_import", "active_energy_export", "water_volume", "gas_volume", "generator_runtime",
                 "hvac_runtime")  # fmt: skip
    deltas = (r.filter(pl.col("quantity").is_in(registers)).sort("device_id", "quantity", "ts_ms")
              .with_columns(d=pl.col("value").diff().over("device_id", "quantity")))  # fmt: skip
    assert deltas.filter(pl.col("d") < 0).height == 0
    engine = r.filter(pl.col("quantity") == "engine_state")["value"]
    assert 0 < engine.mean() < 0.5  # generators mostly stopped, but they do run
    assert set(r.filter(pl.col("quantity") == "hvac_run_state")["value"].unique()) == {0.0, 1.0}
    assert obs.sim_usage["sessions"].min() >= 1 and obs.sim_usage["sms_mo"].max() <= 1


# -- ground truth = real stages -------------------------------------------------------------------------------


def _assert_truth(sc: Scenario, config: SimConfig, decoder: Decoder) -> Observed:
    obs = run_pipeline(sc, config, decoder)
    t = sc.truth
    assert obs.rows == t.expected_rows["readings"]
    assert obs.sim_rows == t.expected_rows["sim_usage"]
    assert obs.registry_rows == t.expected_rows["device_registry"]
    assert obs.deadletter == t.expected_deadletter
    assert obs.exact == t.exact_duplicates_dropped
    assert obs.luhn == t.luhn_flagged
    if config.days < config.lateness_days:  # each fault entry stands for at most one dead letter
        assert Counter(f["expected_reason"] for f in t.faults if f["expected_reason"]) == Counter(t.expected_deadletter)
    return obs


def test_ground_truth_matches_real_stages_default(default: Scenario, decoder: Decoder) -> None:
    _assert_truth(default, SimConfig(), decoder)
    t = default.truth
    for reason in ("undecodable", "schema_mismatch", "oversize", "unknown_device", "out_of_range", "non_finite",
                   "unknown_quantity", "future_timestamp", "too_late", "conflicting_duplicate",
                   "invalid_identifier"):  # fmt: skip
        assert t.expected_deadletter.get(reason, 0) > 0, reason
    assert t.exact_duplicates_dropped > 0 and t.luhn_flagged > 0


@pytest.mark.parametrize(
    "config",
    [
        SimConfig(seed=3, tenants=2, sites_per_tenant=2, days=1.0, batch=False),
        SimConfig(seed=5, tenants=2, sites_per_tenant=1, days=0.5, formats=("json",), fault_rate=0.05),
        SimConfig(seed=11, tenants=1, sites_per_tenant=2, days=1.5, lateness_days=1.0),  # beyond the horizon
        SimConfig(seed=2, tenants=1, sites_per_tenant=2, days=0.5, faults=False),
        SimConfig(seed=4, tenants=2, sites_per_tenant=2, days=0.5, dlms_meters=4),
        SimConfig(seed=6, tenants=1, sites_per_tenant=1, days=0.5, dlms_meters=2, faults=False),
    ],
    ids=["single-readings", "json-only", "beyond-horizon", "no-faults", "dlms", "dlms-no-faults"],
)
def test_ground_truth_matches_real_stages(config: SimConfig, encoder: Encoder, decoder: Decoder) -> None:
    sc = build_scenario(config, NOW, encoder)
    _assert_truth(sc, config, decoder)
    if not config.faults:
        assert set(sc.truth.expected_deadletter) == {"unknown_device"}
    if config.days > config.lateness_days:
        assert sc.truth.expected_deadletter["too_late"] > 1000
        assert sc.truth.expected_rows["sim_usage"]  # the newer records still count


def test_single_reading_messages_are_keyed_by_device(encoder: Encoder, decoder: Decoder) -> None:
    sc = build_scenario(replace(SMALL, batch=False), NOW, encoder)
    seen = 0
    for m, r, sent_at in _readings(sc, decoder):
        assert sent_at is None and m.key.decode() == r["device_id"]
        seen += 1
    assert seen > 1000


def test_batches_are_keyed_by_gateway_and_duplicates_reuse_the_key(default: Scenario, decoder: Decoder) -> None:
    keys: dict[tuple[str, int], set[bytes]] = {}
    for m, r, sent_at in _readings(default, decoder):
        assert sent_at is not None and r["device_id"].startswith(m.key.decode().removesuffix("-gw"))
        keys.setdefault((r["device_id"], r["ts"]), set()).add(m.key)
    dups = [f for f in default.truth.faults if f["kind"] in ("exact_duplicate", "conflicting_duplicate")]
    assert dups
    for f in dups:
        assert len(keys[(f["device_id"], f["ts"])]) == 1


def test_late_messages_arrive_after_later_readings(default: Scenario, decoder: Decoder) -> None:
    newest: dict[str, int] = {}
    out_of_order = 0
    for _, r, _ in _readings(default, decoder):
        if r["ts"] < newest.get(r["device_id"], 0) - 3_600_000:
            out_of_order += 1
        newest[r["device_id"]] = max(newest.get(r["device_id"], 0), r["ts"])
    assert any(f["kind"] == "late" for f in default.truth.faults) and out_of_order > 0


def test_dlms_meters_cover_every_variant_and_leave_the_rest_unchanged(
    encoder: Encoder, decoder: Decoder, tmp_path: Path
) -> None:
    config = SimConfig(seed=9, tenants=2, sites_per_tenant=2, days=0.5, dlms_meters=4)
    sc = build_scenario(config, NOW, encoder)
    obs = _assert_truth(sc, config, decoder)
    regs = [decoder(m.value)[1] for m in sc.registrations]
    dlms = {r["subject_id"]: r for r in regs if r["attributes"].get("interface") == "dlms-mbus"}
    assert len(dlms) == 5  # four keyed meters and one whose key is missing
    keyed = {e["meter_number"]: e for e in sc.dlms_keys["meter"]}
    assert len(keyed) == 4 and set(keyed) < set(dlms)
    assert all(dlms[n]["key_id"] == e["system_title"] for n, e in keyed.items())
    variants = {(dlms[n]["attributes"]["layout"], dlms[n]["attributes"]["security"]) for n in keyed}
    assert variants == {(lay, sec) for lay in ("nested", "flat") for sec in ("encryption-only", "authenticated")}
    frames = [m for m in sc.telemetry if m.topic == FRAMES_TOPIC]
    assert {m.key.decode() for m in frames} == set(dlms)
    assert any(not parse_frames(m.value)[-1].last for m in frames)  # split pushes: one message per frame
    assert {f["expected_reason"] for f in sc.truth.faults if f["kind"].startswith("dlms_")} == {
        None,
        "unknown_key",
        "decrypt_failed",
        "auth_failed",
        "replayed_frame",
        "bad_checksum",
        "incomplete_frame",
    }
    assert obs.frames is not None and set(obs.frames["device_id"]) == set(keyed)
    doubtful = obs.frames.filter((pl.col("flags") & int(Flag.CLOCK_DOUBTFUL)) != 0)
    assert doubtful["ts"].n_unique() == sum(f["kind"] == "dlms_clock_doubtful" for f in sc.truth.faults) == 2
    # no key material in what the simulator writes besides the key file
    secrets = [e[k] for e in keyed.values() for k in ("guek", "ak") if k in e]
    text = sc.truth.to_json() + "".join(m.value.hex() for m in sc.registrations)
    assert secrets and not any(k in text or k.upper() in text for k in secrets)
    path = sc.write_dlms_keys(tmp_path / "keys.json")
    assert path.stat().st_mode & 0o777 == 0o600 and len(KeyStore.from_file(path)) == 4
    # the DLMS meters come on top: everything else is byte for byte what it was
    plain = build_scenario(replace(config, dlms_meters=0), NOW, encoder)
    assert [m for m in sc.telemetry if m.topic != FRAMES_TOPIC] == plain.telemetry
    assert sc.registrations[: len(plain.registrations)] == plain.registrations and plain.dlms_keys == {}


# -- data faults are really in the data ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def observed(default: Scenario, decoder: Decoder) -> Observed:
    return run_pipeline(default, SimConfig(), decoder)


def _series(obs: Observed, device: str, quantity: str) -> dict[int, float]:
    r = obs.readings.filter((pl.col("device_id") == device) & (pl.col("quantity") == quantity)).sort("ts_ms")
    return dict(zip(r["ts_ms"].to_list(), r["value"].to_list(), strict=True))


def _faults(sc: Scenario, kind: str) -> list[dict]:
    found = [f for f in sc.truth.faults if f["kind"] == kind]
    assert found, kind
    return found


def test_register_faults(default: Scenario, observed: Observed, decoder: Decoder) -> None:
    regs = {r["subject_id"]: r for r in (decoder(m.value)[1] for m in default.registrations)}
    for f in _faults(default, "rollover"):
        [(code, ceiling)] = regs[f["device_id"]]["register_ceilings"].items()
        s = _series(observed, f["device_id"], code)
        before = max(t for t in s if t < f["ts"])
        assert s[before] >= 0.9 * ceiling and s[f["ts"]] <= 0.1 * ceiling
    for f in _faults(default, "reset"):
        code = next(q for q in ("active_energy_import", "water_volume", "gas_volume")
                    if _series(observed, f["device_id"], q))  # fmt: skip
        s = _series(observed, f["device_id"], code)
        before = max(t for t in s if t < f["ts"])
        assert s[f["ts"]] < 0.01 * s[before]
    for f in _faults(default, "spike"):
        s = _series(observed, f["device_id"], "active_energy_import")
        before = max(t for t in s if t < f["ts"])
        expected = float(f["detail"].rsplit("-> ", 1)[1])
        assert s[f["ts"]] - s[before] == pytest.approx(expected, abs=0.2)
    for f in _faults(default, "flatline"):
        s = _series(observed, f["device_id"], "active_energy_import")
        p = _series(observed, f["device_id"], "active_power")
        span = [t for t in s if f["ts"] <= t <= f["end_ts"]]
        assert len(span) >= 12 and len({s[t] for t in span}) == 1
        assert min(p[t] for t in span if t in p) > 50


def test_gap_faults(default: Scenario, observed: Observed) -> None:
    causes = Counter()
    offline = {f["tenant_id"] + f["iccid"]: f for f in _faults(default, "sim_offline")}
    for f in _faults(default, "gap"):
        times = observed.readings.filter(pl.col("device_id") == f["device_id"])["ts_ms"].unique()
        assert not times.is_between(f["ts"], f["end_ts"]).any()
        assert (times < f["ts"]).any() and (times > f["end_ts"]).any()
        causes[f["detail"].rsplit("=", 1)[1]] += 1
    assert causes["device"] > 0 and causes["connectivity"] > 0
    for f in offline.values():
        usage = observed.sim_usage.filter((pl.col("iccid") == f["iccid"])
                                          & pl.col("period_start_ms").is_between(f["ts"], f["end_ts"]))  # fmt: skip
        assert usage.height >= 2 and usage["sessions"].sum() == 0 and usage["bytes_up"].sum() == 0


def test_machine_and_power_quality_faults(default: Scenario, observed: Observed) -> None:
    for f in _faults(default, "fuel_drop"):
        level = _series(observed, f["device_id"], "fuel_level")
        engine = _series(observed, f["device_id"], "engine_state")
        span = [t for t in level if f["ts"] <= t <= f["end_ts"]]
        assert len(span) == 8 and all(engine[t] == 0 for t in span)
        values = [level[t] for t in span]
        assert statistics.mean(values[:4]) - statistics.mean(values[4:]) > 3
    for f in _faults(default, "voltage_out_of_band"):
        phase = f["detail"].split(" ")[0]
        v = _series(observed, f["device_id"], phase)
        assert all(190 < v[t] < 200 for t in v if f["ts"] <= t <= f["end_ts"])
    for f in _faults(default, "low_power_factor"):
        pf = _series(observed, f["device_id"], "power_factor")
        assert statistics.mean(pf[t] for t in pf if f["ts"] <= t <= f["end_ts"]) < 0.85


def test_sim_faults(default: Scenario, observed: Observed) -> None:
    usage = observed.sim_usage

    def of(f: dict) -> pl.DataFrame:
        return usage.filter(pl.col("iccid") == f["iccid"]).sort("period_start_ms")

    for f in _faults(default, "sim_data_spike"):
        u = of(f)
        spike = u.filter(pl.col("period_start_ms") == f["ts"])["bytes_up"].item()
        assert spike > 10 * u["bytes_up"].median()
    for f in _faults(default, "sim_sms_flood"):
        u = of(f).filter(pl.col("period_start_ms").is_between(f["ts"], f["ts"] + DAY - 1))
        assert u["sms_mo"].sum() >= 150
    for f in _faults(default, "sim_imei_change"):
        u = of(f)
        assert u.filter(pl.col("period_start_ms") < f["ts"])["imei"].n_unique() == 1
        assert set(u.filter(pl.col("period_start_ms") >= f["ts"])["imei"]) == {u["imei"][-1]} != {u["imei"][0]}
    for f in _faults(default, "sim_roaming"):
        u = of(f).filter(pl.col("period_start_ms").is_between(f["ts"], f["end_ts"]))
        assert u["roaming"].all() and u.height == 4
    assert not usage.filter(
        pl.col("roaming") & ~pl.col("iccid").is_in([f["iccid"] for f in _faults(default, "sim_roaming")])
    ).height


# -- config and producer ------------------------------------------------------------------------------------


def test_config_is_checked() -> None:
    with pytest.raises(ValueError):
        SimConfig(formats=("xml",))
    with pytest.raises(ValueError):
        SimConfig(formats=("avro", "json"), format_weights=(1.0,))
    with pytest.raises(ValueError):
        SimConfig(dlms_meters=-1)
    assert SimConfig().weights() == (0.8, 0.2)


def test_produce_raises_when_nothing_can_be_delivered() -> None:
    msg = OutMessage(READINGS_TOPIC, b"k", b"{}")
    with pytest.raises(BrokerError):
        produce(
            [msg],
            bootstrap="127.0.0.1:9",
            topic_prefix="t.",
            producer_config={"message.timeout.ms": 800, "socket.connection.setup.timeout.ms": 500},
        )
