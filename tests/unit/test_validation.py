"""Columnar validation: readings, SIM usage, duplicates (rule tables + properties)."""

from __future__ import annotations

import math
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pipeline.validation.duplicates as dup_module
from pipeline.catalogue import load_catalogue
from pipeline.envelope import Reason
from pipeline.flags import Flag
from pipeline.validation import DuplicateFilter, ReadingValidator, SimUsageValidator, luhn_check_digit

NOW = 1_760_000_000_000
DAY = 86_400_000
LATENESS = 30 * DAY
TOL = 300_000

READING_SCHEMA = {
    "msg_idx": pl.Int32,
    "rec_idx": pl.Int32,
    "device_id": pl.Utf8,
    "ts_ms": pl.Int64,
    "quantity": pl.Utf8,
    "value": pl.Float64,
    "seq": pl.Int64,
    "event_id": pl.Utf8,
    "quality": pl.Int32,
    "gateway_id": pl.Utf8,
}


def reading(**kw: Any) -> dict[str, Any]:
    row = {
        "msg_idx": 0,
        "rec_idx": 0,
        "device_id": "meter-1",
        "ts_ms": NOW - 60_000,
        "quantity": "voltage_l1",
        "value": 231.5,
        "seq": 1,
        "event_id": "e1",
        "quality": None,
        "gateway_id": "gw-1",
    }
    row.update(kw)
    return row


def readings(*rows: dict[str, Any]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=READING_SCHEMA)


@pytest.fixture(scope="module")
def validator() -> ReadingValidator:
    return ReadingValidator(load_catalogue(), lateness_ms=LATENESS, future_tolerance_ms=TOL)


# -- readings -------------------------------------------------------------------------------

READING_RULES = [
    # (name, failing row, expected reason, passing row)
    ("device_id", dict(device_id="bad id"), Reason.INVALID_IDENTIFIER, dict(device_id="gw.1:meter_2-a")),
    ("device_id_null", dict(device_id=None), Reason.INVALID_IDENTIFIER, dict(device_id="m")),
    ("future", dict(ts_ms=NOW + TOL + 1), Reason.FUTURE_TIMESTAMP, dict(ts_ms=NOW + TOL)),
    ("late", dict(ts_ms=NOW - LATENESS - 1), Reason.TOO_LATE, dict(ts_ms=NOW - LATENESS)),
    ("ts_null", dict(ts_ms=None), Reason.TOO_LATE, dict(ts_ms=NOW)),
    ("quantity", dict(quantity="voltage_l4"), Reason.UNKNOWN_QUANTITY, dict(quantity="frequency", value=50.0)),
    ("nan", dict(value=math.nan), Reason.NON_FINITE, dict(value=0.0)),
    ("inf", dict(value=-math.inf), Reason.NON_FINITE, dict(value=500.0)),
    ("null", dict(value=None), Reason.NON_FINITE, dict(value=230.0)),
    ("above", dict(value=500.01), Reason.OUT_OF_RANGE, dict(value=500.0)),
    (
        "below",
        dict(quantity="power_factor", value=-1.01),
        Reason.OUT_OF_RANGE,
        dict(quantity="power_factor", value=-1.0),
    ),
]


@pytest.mark.parametrize(("name", "bad", "reason", "good"), READING_RULES, ids=[r[0] for r in READING_RULES])
def test_reading_rules(validator, name, bad, reason, good) -> None:
    accepted, rejected = validator(readings(reading(**bad), reading(**good)), NOW)
    assert rejected["reason"].to_list() == [reason.value]
    assert rejected["detail"].null_count() == 0 and rejected["detail"][0]
    assert accepted.height == 1


def test_first_matching_rule_wins(validator) -> None:
    row = reading(device_id="", ts_ms=NOW + DAY, quantity="nope", value=math.nan)
    rows = [
        row,
        {**row, "device_id": "m"},
        {**row, "device_id": "m", "ts_ms": NOW - 2 * LATENESS},
        {**row, "device_id": "m", "ts_ms": NOW},
        {**row, "device_id": "m", "ts_ms": NOW, "quantity": "frequency"},
    ]
    _, rejected = validator(readings(*rows), NOW)
    assert rejected["reason"].to_list() == [
        "invalid_identifier",
        "future_timestamp",
        "too_late",
        "unknown_quantity",
        "non_finite",
    ]


def test_out_of_range_detail_names_channel_and_bound(validator) -> None:
    _, rejected = validator(readings(reading(value=612.0)), NOW)
    assert rejected["detail"].to_list() == ["voltage_l1=612.0 outside [0, 500] V"]


def test_bad_channel_keeps_good_channels(validator) -> None:
    channels = [
        ("voltage_l1", 230.0),
        ("voltage_l2", 612.0),
        ("current_l1", 5.0),
        ("frequency", math.inf),
        ("bogus", 1.0),
        ("power_factor", 0.95),
    ]
    frame = readings(*(reading(quantity=q, value=v, rec_idx=3) for q, v in channels))
    accepted, rejected = validator(frame, NOW)
    assert accepted["quantity"].to_list() == ["voltage_l1", "current_l1", "power_factor"]
    assert rejected["quantity"].to_list() == ["voltage_l2", "frequency", "bogus"]
    assert set(accepted["rec_idx"]) == {3}


def test_invalid_device_rejects_every_channel(validator) -> None:
    frame = readings(*(reading(device_id="x y", quantity=q) for q in ("voltage_l1", "voltage_l2", "voltage_l3")))
    accepted, rejected = validator(frame, NOW)
    assert accepted.height == 0 and set(rejected["reason"]) == {"invalid_identifier"}


def test_reading_output_schema_and_quality_flag(validator) -> None:
    frame = readings(reading(quality=None), reading(quality=0), reading(quality=3), reading(quality=3, value=-1.0))
    accepted, rejected = validator(frame, NOW)
    assert accepted.schema == pl.Schema({**READING_SCHEMA, "flags": pl.UInt32})
    assert rejected.schema == pl.Schema({**READING_SCHEMA, "reason": pl.Utf8, "detail": pl.Utf8})
    assert accepted["flags"].to_list() == [0, 0, int(Flag.DEVICE_QUALITY)]
    empty_a, empty_r = validator(frame.clear(), NOW)
    assert (empty_a.height, empty_r.height) == (0, 0)
    assert empty_a.schema == accepted.schema and empty_r.schema == rejected.schema


# -- SIM usage ------------------------------------------------------------------------------

ICCID = "894412345678901234" + luhn_check_digit("894412345678901234")
ICCID_BAD_LUHN = ICCID[:-1] + str((int(ICCID[-1]) + 1) % 10)
COUNTERS = ("bytes_up", "bytes_down", "sms_mo", "sms_mt", "voice_seconds", "csd_seconds", "sessions")
SIM_SCHEMA = {
    "msg_idx": pl.Int32,
    "iccid": pl.Utf8,
    "imsi": pl.Utf8,
    "msisdn": pl.Utf8,
    "imei": pl.Utf8,
    "period_start_ms": pl.Int64,
    "period_end_ms": pl.Int64,
    **{c: pl.Int64 for c in COUNTERS},
    "mcc": pl.Utf8,
    "mnc": pl.Utf8,
    "rat": pl.Utf8,
    "plan_id": pl.Utf8,
}


def usage(**kw: Any) -> dict[str, Any]:
    row = {
        "msg_idx": 0,
        "iccid": ICCID,
        "imsi": "262011234567890",
        "msisdn": "4915112345678",
        "imei": None,
        "period_start_ms": NOW - 3_600_000,
        "period_end_ms": NOW,
        **{c: 10 for c in COUNTERS},
        "mcc": "262",
        "mnc": "01",
        "rat": "LTE",
        "plan_id": "p1",
    }
    row.update(kw)
    return row


SIM_RULES = [
    ("iccid", dict(iccid="8944123"), dict(iccid=ICCID_BAD_LUHN)),
    ("iccid_null", dict(iccid=None), dict(iccid=ICCID + "FF")),
    ("imsi", dict(imsi="999011234567890"), dict(imsi="310260123456789")),
    ("msisdn", dict(msisdn="+0049151"), dict(msisdn="+4915112345678")),
    ("imei", dict(imei="490154203237519"), dict(imei="490154203237518")),
    ("imeisv", dict(imei="49015420323751"), dict(imei="4901542032375181")),
    ("serving_mcc", dict(mcc="26"), dict(mcc="232")),
    ("serving_mnc", dict(mnc="1"), dict(mnc="001")),
]
SIM_RULES_OTHER = [
    ("period", dict(period_end_ms=NOW - 3_600_001), Reason.INVALID_PERIOD, dict(period_end_ms=NOW - 3_600_000)),
    ("period_null", dict(period_start_ms=None), Reason.INVALID_PERIOD, dict(period_start_ms=NOW - 1)),
    *[(c, {c: -1}, Reason.NEGATIVE_COUNTER, {c: 0}) for c in COUNTERS],
    ("future", dict(period_end_ms=NOW + TOL + 1), Reason.FUTURE_TIMESTAMP, dict(period_end_ms=NOW + TOL)),
    ("late", dict(period_start_ms=NOW - LATENESS - 1), Reason.TOO_LATE, dict(period_start_ms=NOW - LATENESS)),
]
SIM_TABLE = [(n, b, Reason.INVALID_IDENTIFIER, g) for n, b, g in SIM_RULES] + SIM_RULES_OTHER


@pytest.mark.parametrize(("name", "bad", "reason", "good"), SIM_TABLE, ids=[r[0] for r in SIM_TABLE])
def test_sim_usage_rules(name, bad, reason, good) -> None:
    frame = pl.DataFrame([usage(**bad), usage(**good)], schema=SIM_SCHEMA)
    accepted, rejected = SimUsageValidator(lateness_ms=LATENESS, future_tolerance_ms=TOL)(frame, NOW)
    assert rejected["reason"].to_list() == [reason.value]
    assert rejected["detail"][0]
    assert accepted.height == 1


def test_sim_usage_one_reason_per_record_in_rule_order() -> None:
    rows = [
        usage(imsi="1", msisdn="x", sms_mo=-1),
        usage(msisdn="x", period_end_ms=0),
        usage(period_end_ms=NOW - DAY, sms_mo=-3, voice_seconds=-2),
        usage(period_start_ms=0, period_end_ms=NOW * 2),
    ]
    _, rejected = SimUsageValidator(lateness_ms=LATENESS)(pl.DataFrame(rows, schema=SIM_SCHEMA), NOW)
    assert rejected["reason"].to_list() == [
        "invalid_identifier",
        "invalid_identifier",
        "invalid_period",
        "future_timestamp",
    ]
    assert "imsi" in rejected["detail"][0] and "msisdn" in rejected["detail"][1]


def test_sim_usage_negative_counter_detail_names_counters() -> None:
    frame = pl.DataFrame([usage(sms_mo=-3, voice_seconds=-2)], schema=SIM_SCHEMA)
    _, rejected = SimUsageValidator(lateness_ms=LATENESS)(frame, NOW)
    assert rejected["detail"].to_list() == ["sms_mo=-3, voice_seconds=-2 < 0"]


def test_sim_usage_accepted_enrichment() -> None:
    rows = [
        usage(iccid=ICCID + "F", msisdn="4915112345678"),
        usage(iccid=ICCID_BAD_LUHN, mcc="232", mnc="03"),
        usage(imsi="310260123456789", mcc="310", mnc="260", msisdn=" +12025550123 "),
    ]
    frame = pl.DataFrame(rows, schema=SIM_SCHEMA)
    accepted, rejected = SimUsageValidator(lateness_ms=LATENESS)(frame, NOW)
    assert rejected.height == 0
    extra = {"flags": pl.UInt32, "home_mcc": pl.Utf8, "home_mnc": pl.Utf8, "roaming": pl.Boolean}
    assert accepted.schema == pl.Schema({**SIM_SCHEMA, **extra})
    assert accepted["iccid"].to_list() == [ICCID, ICCID_BAD_LUHN, ICCID]
    assert accepted["msisdn"].to_list() == ["+4915112345678", "+4915112345678", "+12025550123"]
    assert accepted["flags"].to_list() == [0, int(Flag.ICCID_LUHN_FAILED), 0]
    assert accepted["home_mcc"].to_list() == ["262", "262", "310"]
    assert accepted["home_mnc"].to_list() == ["01", "01", "260"]
    assert accepted["roaming"].to_list() == [False, True, False]
    # rejected rows keep the values as received
    _, rej = SimUsageValidator(lateness_ms=LATENESS)(
        pl.DataFrame([usage(iccid=ICCID + "F", sms_mt=-1)], schema=SIM_SCHEMA), NOW
    )
    assert rej["iccid"].to_list() == [ICCID + "F"]


def test_sim_usage_empty_frame() -> None:
    accepted, rejected = SimUsageValidator(lateness_ms=LATENESS)(pl.DataFrame(schema=SIM_SCHEMA), NOW)
    assert (accepted.height, rejected.height) == (0, 0)
    assert rejected.columns == [*SIM_SCHEMA, "reason", "detail"]


# -- duplicates ----------------------------------------------------------------------------


def rows(*items: tuple[str, str, int, float | None]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {"device_id": d, "quantity": q, "ts_ms": t, "value": v, "tenant_id": "t1", "flags": i}
            for i, (d, q, t, v) in enumerate(items)
        ],
        schema={
            "device_id": pl.Utf8,
            "quantity": pl.Utf8,
            "ts_ms": pl.Int64,
            "value": pl.Float64,
            "tenant_id": pl.Utf8,
            "flags": pl.UInt32,
        },
    )


def test_duplicates_within_frame() -> None:
    frame = rows(
        ("a", "v", 1, 1.0),
        ("a", "v", 1, 1.0),
        ("a", "v", 1, 2.0),
        ("b", "v", 1, 5.0),
        ("a", "v", 2, 1.0),
        ("a", "v", 1, 1.0),
    )
    fresh, conflicts, exact = DuplicateFilter()(frame)
    assert fresh.columns == frame.columns and fresh["flags"].to_list() == [0, 3, 4]
    assert exact == 2
    assert conflicts["flags"].to_list() == [2]
    assert conflicts["reason"].to_list() == ["conflicting_duplicate"]
    assert conflicts["detail"].to_list() == ["v@1 first value 1.0, got 2.0"]
    assert conflicts.columns == [*frame.columns, "reason", "detail"]


def test_duplicates_across_calls_first_remembered_value_wins() -> None:
    f = DuplicateFilter()
    f(rows(("a", "v", 1, 1.0), ("b", "v", 1, 2.0)))
    fresh, conflicts, exact = f(rows(("a", "v", 1, 3.0), ("a", "v", 1, 1.0), ("c", "v", 1, 1.0), ("b", "v", 1, 2.0)))
    assert fresh["device_id"].to_list() == ["c"]
    assert exact == 2
    assert conflicts["detail"].to_list() == ["v@1 first value 1.0, got 3.0"]
    # conflicts are not remembered: the remembered value stays 1.0
    fresh, conflicts, exact = f(rows(("a", "v", 1, 3.0), ("c", "v", 1, 1.0)))
    assert (fresh.height, conflicts.height, exact) == (0, 1, 1)
    assert f.remembered_rows == 3


def test_duplicates_capacity_evicts_oldest_batches() -> None:
    f = DuplicateFilter(capacity_rows=4)
    f(rows(*(("old", "v", t, 1.0) for t in range(3))))
    f(rows(*(("new", "v", t, 1.0) for t in range(3))))  # 6 > 4: the first batch goes
    assert f.remembered_rows == 3
    fresh, conflicts, exact = f(rows(("old", "v", 0, 9.0), ("new", "v", 0, 1.0), ("new", "v", 1, 2.0)))
    assert (fresh["device_id"].to_list(), conflicts.height, exact) == (["old"], 1, 1)
    assert f.remembered_rows <= 4


def test_duplicates_capacity_zero_and_oversized_batch() -> None:
    f = DuplicateFilter(capacity_rows=0)
    frame = rows(("a", "v", 1, 1.0))
    assert f(frame)[0].height == 1 and f(frame)[0].height == 1
    g = DuplicateFilter(capacity_rows=2)
    g(rows(*(("a", "v", t, 1.0) for t in range(5))))
    assert g.remembered_rows == 2
    assert g(rows(("a", "v", 4, 1.0), ("a", "v", 0, 1.0)))[0]["ts_ms"].to_list() == [0]


def test_duplicates_survive_hash_collisions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dup_module, "_key_hash", lambda: pl.lit(7, dtype=pl.UInt64).alias("__h"))
    f = DuplicateFilter()
    f(rows(("a", "v", 1, 1.0), ("b", "v", 1, 1.0)))
    fresh, conflicts, exact = f(rows(("a", "v", 1, 1.0), ("b", "v", 1, 2.0), ("c", "v", 1, 1.0)))
    assert (fresh["device_id"].to_list(), conflicts["device_id"].to_list(), exact) == (["c"], ["b"], 1)


keys = st.tuples(st.sampled_from(["m1", "m2", "m3"]), st.sampled_from(["v", "f"]), st.integers(0, 4))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(keys, st.sampled_from([1.0, 2.0, -0.0, 1e300])), max_size=40))
def test_duplicate_filter_feeding_twice(items) -> None:
    frame = rows(*((d, q, t, v) for (d, q, t), v in items))
    f = DuplicateFilter()
    fresh1, conflicts1, exact1 = f(frame)
    assert fresh1.height + conflicts1.height + exact1 == frame.height
    assert fresh1.select("device_id", "quantity", "ts_ms").is_unique().all()
    fresh2, conflicts2, exact2 = f(frame)
    assert fresh2.height == 0
    assert (conflicts2.height, exact2) == (conflicts1.height, frame.height - conflicts1.height)


@settings(max_examples=40, deadline=None)
@given(st.lists(keys, max_size=40))
def test_duplicate_filter_conflict_free_frame_twice_is_all_exact(key_list) -> None:
    frame = rows(*((d, q, t, float(t * 10 + len(d) + len(q))) for d, q, t in key_list))
    f = DuplicateFilter()
    f(frame)
    fresh, conflicts, exact = f(frame)
    assert (fresh.height, conflicts.height, exact) == (0, 0, frame.height)


def test_schemas_match_the_codecs_output() -> None:
    frames = pytest.importorskip("pipeline.codecs.frames")
    assert dict(frames.READINGS_SCHEMA) == READING_SCHEMA
    assert dict(frames.SIM_USAGE_SCHEMA) == SIM_SCHEMA
