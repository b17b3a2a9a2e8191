"""Identifier checks (domain/identifiers.md) and the MCC/MNC data files."""

from __future__ import annotations

import csv
import re

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.resources import schemas_dir
from pipeline.validation import (
    check_iccid,
    check_imei,
    check_imsi,
    device_id_ok,
    luhn_check_digit,
    luhn_ok,
    mcc_table,
    mnc_table,
    msisdn_normalized,
    normalize_msisdn,
    valid_device_id,
)

digits = st.text(alphabet="0123456789", min_size=1, max_size=30)


def _with_check(payload: str) -> str:
    return payload + luhn_check_digit(payload)


ICCID19 = _with_check("894412345678901234")  # 18 + check digit
ICCID20 = _with_check("8991101200003204514")  # 19 + check digit


# -- Luhn ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("s", "ok"),
    [
        ("79927398713", True),
        ("79927398710", False),
        ("490154203237518", True),
        ("0", True),
        ("", False),
        ("7992739871a", False),
        ("٧٩٩٢٧٣٩٨٧١٣", False),
    ],
)
def test_luhn_known_values(s: str, ok: bool) -> None:
    assert luhn_ok(s) is ok


@given(digits)
def test_luhn_appended_check_digit_always_passes(payload: str) -> None:
    assert luhn_ok(_with_check(payload))


@given(digits, st.data())
def test_luhn_single_digit_change_always_fails(payload: str, data: st.DataObject) -> None:
    number = _with_check(payload)
    pos = data.draw(st.integers(0, len(number) - 1))
    new = data.draw(st.sampled_from([d for d in "0123456789" if d != number[pos]]))
    assert not luhn_ok(number[:pos] + new + number[pos + 1 :])


# -- ICCID ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalized", "luhn"),
    [
        (ICCID19, ICCID19, True),
        (ICCID20, ICCID20, True),
        (ICCID19 + "F", ICCID19, True),
        (ICCID19 + "ff", ICCID19, True),
        (" ".join([ICCID20[:4], ICCID20[4:12], ICCID20[12:]]), ICCID20, True),
        (ICCID19[:-1] + str((int(ICCID19[-1]) + 1) % 10), None, False),  # flag, not rejection
    ],
)
def test_iccid_valid(raw: str, normalized: str | None, luhn: bool) -> None:
    c = check_iccid(raw)
    assert c.valid
    assert c.luhn_ok is luhn
    if normalized is not None:
        assert c.normalized == normalized
    assert (c.detail == "") is luhn


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        ICCID19[:-1][:18][:-1],
        ICCID20 + "1",
        "12" + ICCID19[2:],
        ICCID19[:10] + "A" + ICCID19[11:],
        "F" + ICCID19,
        "89" * 10 + "F1",
    ],
)
def test_iccid_invalid(raw: str | None) -> None:
    c = check_iccid(raw)
    assert not c.valid and not c.luhn_ok and c.detail


# -- IMSI ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("imsi", "mcc", "mnc"),
    [
        ("262011234567890", "262", "01"),  # listed 2-digit (Telekom DE)
        ("310260123456789", "310", "260"),  # listed 3-digit (T-Mobile US)
        ("310999123456789", "310", "999"),  # unlisted, North America default: 3
        ("232991234567890", "232", "99"),  # unlisted, default: 2
        ("405854123456789", "405", "854"),  # India 405: 3-digit Jio
        ("405511234567890", "405", "51"),  # India 405: 2-digit Airtel
        ("404451234567890", "404", "45"),
        ("234151234567890", "234", "15"),
        ("722310123456789", "722", "310"),  # Argentina default 3
        ("901281234567890", "901", "28"),
        ("262011", "262", "01"),  # 6 digits is the minimum
        ("310260", "310", "260"),
    ],
)
def test_imsi_valid(imsi: str, mcc: str, mnc: str) -> None:
    c = check_imsi(imsi)
    assert (c.valid, c.mcc, c.mnc) == (True, mcc, mnc)


@pytest.mark.parametrize(
    "imsi",
    [None, "", "26201", "2620112345678901", "999011234567890", "000011234567890", "26201123456789a", "+262011234567"],
)
def test_imsi_invalid(imsi: str | None) -> None:
    c = check_imsi(imsi)
    assert not c.valid and c.detail and c.mnc == ""


# -- MSISDN, IMEI, device id ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+4915112345678", "+4915112345678"),
        ("4915112345678", "+4915112345678"),
        (" 919812345678 ", "+919812345678"),
        ("12", "+12"),
        ("+123456789012345", "+123456789012345"),
        ("+1234567890123456", None),
        ("+0123456", None),
        ("0049151", None),
        ("1", None),
        ("+49 151 1234", None),
        ("49151x", None),
        ("", None),
        (None, None),
        ("4915112345678\n", None),
    ],
)
def test_normalize_msisdn(raw: str | None, expected: str | None) -> None:
    assert normalize_msisdn(raw) == expected


@pytest.mark.parametrize(
    ("raw", "valid", "kind"),
    [
        ("490154203237518", True, "imei"),
        ("490154203237519", False, ""),
        ("4901542032375181", True, "imeisv"),
        ("49015420323751", False, ""),
        ("49015420323751811", False, ""),
        ("49015420323751A", False, ""),
        (None, False, ""),
        ("", False, ""),
    ],
)
def test_check_imei(raw: str | None, valid: bool, kind: str) -> None:
    c = check_imei(raw)
    assert (c.valid, c.kind) == (valid, kind)


@pytest.mark.parametrize(
    ("s", "ok"),
    [
        ("meter-0001", True),
        ("A", True),
        ("gw.01:ch_2-x", True),
        ("a" * 128, True),
        ("a" * 129, False),
        ("-meter", False),
        (".x", False),
        ("", False),
        (None, False),
        ("meter 1", False),
        ("meter/1", False),
        ("meter1\n", False),
        ("mèter", False),
    ],
)
def test_valid_device_id(s: str | None, ok: bool) -> None:
    assert valid_device_id(s) is ok
    assert pl.select(device_id_ok(pl.lit(s, dtype=pl.Utf8))).item() is ok


id_text = st.text(alphabet="aZ09._:- +/\nè\t", max_size=20) | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,3}")
phone_text = st.text(alphabet="0123456789+ \ta-", max_size=18) | st.from_regex(r"\+?[1-9][0-9]{1,14}")


@settings(max_examples=60, deadline=None)
@given(st.lists(id_text, max_size=20), st.lists(phone_text, max_size=20))
def test_vectorised_checks_match_scalar(ids: list[str], phones: list[str]) -> None:
    got_ids = pl.select(device_id_ok(pl.Series(ids, dtype=pl.Utf8))).to_series().to_list()
    assert got_ids == [valid_device_id(s) for s in ids]
    got_phones = pl.select(msisdn_normalized(pl.Series(phones, dtype=pl.Utf8))).to_series().to_list()
    assert got_phones == [normalize_msisdn(s) for s in phones]


# -- data files ------------------------------------------------------------------------------


def test_mcc_file_is_complete_and_consistent() -> None:
    with (schemas_dir() / "mcc.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    mccs = [r["mcc"] for r in rows]
    assert len(mccs) == len(set(mccs)) >= 230
    assert all(re.fullmatch(r"[2-7][0-9]{2}|901", m) for m in mccs)
    assert all(re.fullmatch(r"[A-Z]{2}", r["iso"]) for r in rows if r["mcc"] != "901")
    assert {r["mnc_len"] for r in rows} == {"2", "3"}
    table = mcc_table()
    for mcc, iso in [
        ("262", "DE"),
        ("232", "AT"),
        ("234", "GB"),
        ("310", "US"),
        ("208", "FR"),
        ("204", "NL"),
        ("214", "ES"),
        ("222", "IT"),
        ("404", "IN"),
        ("405", "IN"),
    ]:
        assert table[mcc].iso == iso
    assert table["310"].mnc_len == 3 and table["262"].mnc_len == 2


def test_mnc_file_is_consistent() -> None:
    known = mnc_table()
    mccs = mcc_table()
    assert len(known) > 150
    assert all(m in mccs and re.fullmatch(r"[0-9]{2,3}", n) for m, n in known)
    for country in ("404", "405", "262", "232", "234", "310", "208", "204", "214", "222"):
        assert any(m == country for m, _ in known)
    # a 2-digit MNC must never be the prefix of a 3-digit one of the same MCC (longest match would be ambiguous)
    assert not [(m, n) for m, n in known if len(n) == 3 and (m, n[:2]) in known]
