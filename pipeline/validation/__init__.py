"""Columnar validation stage (SPEC §5 Validate): readings, SIM usage, identifiers, duplicates.

Every validator returns ``(accepted, rejected)`` frames; rejected rows carry the
dead-letter ``reason`` (a :class:`pipeline.envelope.Reason` value) and a short
human ``detail``. Nothing here reads the clock: ``now_ms`` is passed in.
"""

from __future__ import annotations

from pipeline.validation.duplicates import DuplicateFilter
from pipeline.validation.identifiers import (
    IccidCheck,
    ImeiCheck,
    ImsiCheck,
    MccInfo,
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
from pipeline.validation.readings import ReadingValidator
from pipeline.validation.sim_usage import SimUsageValidator

__all__ = [
    "DuplicateFilter",
    "IccidCheck",
    "ImeiCheck",
    "ImsiCheck",
    "MccInfo",
    "ReadingValidator",
    "SimUsageValidator",
    "check_iccid",
    "check_imei",
    "check_imsi",
    "device_id_ok",
    "luhn_check_digit",
    "luhn_ok",
    "mcc_table",
    "mnc_table",
    "msisdn_normalized",
    "normalize_msisdn",
    "valid_device_id",
]
