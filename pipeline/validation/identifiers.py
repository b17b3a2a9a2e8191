"""Cellular and device identifier checks (domain/identifiers.md): pure functions.

Scalar functions (``check_iccid`` ...) serve low-volume paths (SIM usage, tests);
``device_id_ok`` and ``msisdn_normalized`` are polars expressions with the same
rules for the hot path.

IMSI MNC length rule (the digits alone cannot tell 2 from 3):

1. ``schemas/mnc.csv`` lists MCC+MNC of known networks; if the IMSI's digits 4-6
   are a listed 3-digit MNC of its MCC, the MNC has 3 digits; else if digits 4-5
   are a listed 2-digit MNC, it has 2.
2. Otherwise the ``mnc_len`` column of ``schemas/mcc.csv`` decides: 3 for the
   North-American codes (302 Canada, 310-316 US, 330/332 PR/VI, 334 Mexico,
   most NANP Caribbean codes) and 708/722/732/750 (Honduras, Argentina,
   Colombia, Falklands); 2 everywhere else.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import cache

import polars as pl

from pipeline.resources import schemas_dir

DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
MSISDN_PATTERN = r"^\+?[1-9][0-9]{1,14}$"

_DEVICE_ID_RE = re.compile(DEVICE_ID_PATTERN[:-1])  # used with fullmatch ("$" would allow "\n")
_MSISDN_RE = re.compile(MSISDN_PATTERN[:-1])
_DIGITS_RE = re.compile(r"[0-9]+")
_SPACES_RE = re.compile(r"\s+", re.ASCII)


@dataclass(frozen=True, slots=True)
class MccInfo:
    mcc: str
    iso: str
    country: str
    mnc_len: int


@dataclass(frozen=True, slots=True)
class IccidCheck:
    valid: bool
    normalized: str
    luhn_ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class ImsiCheck:
    valid: bool
    normalized: str
    mcc: str
    mnc: str
    detail: str


@dataclass(frozen=True, slots=True)
class ImeiCheck:
    valid: bool
    normalized: str
    kind: str  # "imei", "imeisv" or "" when invalid
    detail: str


@cache
def mcc_table() -> dict[str, MccInfo]:
    """``schemas/mcc.csv``: MCC → country and default MNC length."""
    with (schemas_dir() / "mcc.csv").open(encoding="utf-8", newline="") as fh:
        return {r["mcc"]: MccInfo(r["mcc"], r["iso"], r["country"], int(r["mnc_len"])) for r in csv.DictReader(fh)}


@cache
def mnc_table() -> dict[tuple[str, str], str]:
    """``schemas/mnc.csv``: (MCC, MNC) → operator name."""
    with (schemas_dir() / "mnc.csv").open(encoding="utf-8", newline="") as fh:
        return {(r["mcc"], r["mnc"]): r["operator"] for r in csv.DictReader(fh)}


def luhn_check_digit(payload: str) -> str:
    """The Luhn digit that makes ``payload + digit`` pass :func:`luhn_ok`."""
    total = 0
    for i, ch in enumerate(reversed(payload)):
        d = ord(ch) - 48
        if i % 2 == 0:  # these positions are doubled once the check digit is appended
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str(-total % 10)


def luhn_ok(digits: str) -> bool:
    """True when ``digits`` (ASCII digits only, check digit last) passes the Luhn check."""
    if not digits or not _DIGITS_RE.fullmatch(digits):
        return False
    return luhn_check_digit(digits[:-1]) == digits[-1]


def check_iccid(s: str | None) -> IccidCheck:
    """19 or 20 digits starting ``89`` once spaces and trailing ``F`` padding are removed.

    A wrong check digit keeps the ICCID valid (``luhn_ok=False``): it is a flag.
    """
    if s is None:
        return IccidCheck(False, "", False, "iccid missing")
    norm = _SPACES_RE.sub("", s).upper().rstrip("F")
    if not _DIGITS_RE.fullmatch(norm):
        return IccidCheck(False, norm, False, f"iccid {s[:40]!r} is not digits")
    if len(norm) not in (19, 20):
        return IccidCheck(False, norm, False, f"iccid has {len(norm)} digits, expected 19 or 20")
    if not norm.startswith("89"):
        return IccidCheck(False, norm, False, "iccid does not start with 89")
    ok = luhn_ok(norm)
    return IccidCheck(True, norm, ok, "" if ok else "iccid check digit fails Luhn")


def check_imsi(s: str | None) -> ImsiCheck:
    """6-15 digits whose MCC is in ``schemas/mcc.csv``; splits MCC/MNC (module docstring)."""
    if s is None:
        return ImsiCheck(False, "", "", "", "imsi missing")
    norm = s.strip(" \t")
    if not _DIGITS_RE.fullmatch(norm) or not 6 <= len(norm) <= 15:
        return ImsiCheck(False, norm, "", "", f"imsi {s[:40]!r} is not 6-15 digits")
    mcc = norm[:3]
    info = mcc_table().get(mcc)
    if info is None:
        return ImsiCheck(False, norm, mcc, "", f"imsi MCC {mcc} is not a known country code")
    known = mnc_table()
    if (mcc, norm[3:6]) in known:
        mnc_len = 3
    elif (mcc, norm[3:5]) in known:
        mnc_len = 2
    else:
        mnc_len = info.mnc_len
    return ImsiCheck(True, norm, mcc, norm[3 : 3 + mnc_len], "")


def normalize_msisdn(s: str | None) -> str | None:
    """E.164 number as ``+digits``; ``None`` when ``s`` is not E.164."""
    if s is None:
        return None
    s = s.strip(" \t")
    if not _MSISDN_RE.fullmatch(s):
        return None
    return s if s.startswith("+") else "+" + s


def check_imei(s: str | None) -> ImeiCheck:
    """15-digit IMEI with a valid Luhn digit, or a 16-digit IMEISV (no check digit)."""
    if s is None:
        return ImeiCheck(False, "", "", "imei missing")
    norm = s.strip(" \t")
    if not _DIGITS_RE.fullmatch(norm):
        return ImeiCheck(False, norm, "", f"imei {s[:40]!r} is not digits")
    if len(norm) == 16:
        return ImeiCheck(True, norm, "imeisv", "")
    if len(norm) != 15:
        return ImeiCheck(False, norm, "", f"imei has {len(norm)} digits, expected 15 or 16")
    if not luhn_ok(norm):
        return ImeiCheck(False, norm, "", "imei check digit fails Luhn")
    return ImeiCheck(True, norm, "imei", "")


def valid_device_id(s: str | None) -> bool:
    return s is not None and _DEVICE_ID_RE.fullmatch(s) is not None


def device_id_ok(expr: pl.Expr) -> pl.Expr:
    """Vectorised :func:`valid_device_id` (null → False)."""
    return expr.str.contains(DEVICE_ID_PATTERN).fill_null(False)


def msisdn_normalized(expr: pl.Expr) -> pl.Expr:
    """Vectorised :func:`normalize_msisdn` (invalid → null)."""
    s = expr.str.strip_chars(" \t")
    return pl.when(s.str.contains(MSISDN_PATTERN)).then(pl.concat_str(pl.lit("+"), s.str.strip_prefix("+")))
