"""Validation of SIM usage records (one row = one record = at most one reason).

Identifier checks (ICCID, IMSI, IMEI) run once per distinct value in Python
(usage is low volume and the values repeat); MSISDN, serving network and the
period/counter/time rules are polars expressions.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from pipeline.envelope import Reason
from pipeline.flags import Flag
from pipeline.validation.identifiers import check_iccid, check_imei, check_imsi, msisdn_normalized

COUNTERS: tuple[str, ...] = (
    "bytes_up",
    "bytes_down",
    "sms_mo",
    "sms_mt",
    "voice_seconds",
    "csd_seconds",
    "sessions",
)

IDENTIFIERS: tuple[str, ...] = ("iccid", "imsi", "msisdn", "imei")
_P = "__"  # prefix of work columns


def _w(name: str) -> pl.Expr:
    return pl.col(_P + name)


def _txt(name: str, width: int = 20) -> pl.Expr:
    return pl.col(name).cast(pl.Utf8).fill_null("null").str.slice(0, width)


def _per_value(series: pl.Series, fn: Callable[[str | None], tuple], fields: dict) -> pl.DataFrame:
    """Apply ``fn(value) -> tuple`` once per distinct value; key column = ``series.name``."""
    rows = [(v, *fn(v)) for v in series.unique(maintain_order=True).to_list()]
    schema = {series.name: pl.Utf8, **{_P + k: t for k, t in fields.items()}}
    return pl.DataFrame(rows, schema=schema, orient="row")


def _iccid(v: str | None) -> tuple:
    c = check_iccid(v)
    return c.valid, c.normalized, c.luhn_ok, c.detail


def _imsi(v: str | None) -> tuple:
    c = check_imsi(v)
    return c.valid, c.mcc, c.mnc, c.detail


def _imei(v: str | None) -> tuple:
    if v is None:  # optional
        return True, ""
    c = check_imei(v)
    return c.valid, c.detail


_LOOKUPS = (
    ("iccid", _iccid, {"iccid_ok": pl.Boolean, "iccid_norm": pl.Utf8, "luhn": pl.Boolean, "iccid_detail": pl.Utf8}),
    ("imsi", _imsi, {"imsi_ok": pl.Boolean, "home_mcc": pl.Utf8, "home_mnc": pl.Utf8, "imsi_detail": pl.Utf8}),
    ("imei", _imei, {"imei_ok": pl.Boolean, "imei_detail": pl.Utf8}),
)


class SimUsageValidator:
    """Split a SIM usage frame into ``(accepted, rejected)``.

    ``accepted`` = input columns with ``iccid`` normalised (digits, no padding) and
    ``msisdn`` as ``+digits``, plus ``flags`` (UInt32, ``ICCID_LUHN_FAILED``),
    ``home_mcc``/``home_mnc`` (from the IMSI) and ``roaming`` (serving MCC differs).
    ``rejected`` = input columns as received + ``reason`` and ``detail``.
    A null period bound is an ``invalid_period``.
    """

    def __init__(self, *, lateness_ms: int, future_tolerance_ms: int = 300_000):
        if lateness_ms < 0 or future_tolerance_ms < 0:
            raise ValueError("lateness_ms and future_tolerance_ms must be >= 0")
        self.lateness_ms = int(lateness_ms)
        self.future_tolerance_ms = int(future_tolerance_ms)

    def _annotate(self, frame: pl.DataFrame) -> pl.DataFrame:
        work = frame.with_columns(pl.col(c).cast(pl.Utf8) for c in IDENTIFIERS)
        for col, fn, fields in _LOOKUPS:
            table = _per_value(work[col], fn, fields)
            work = work.join(table, on=col, how="left", nulls_equal=True, maintain_order="left")
        return work.with_columns(msisdn_normalized(pl.col("msisdn")).alias(_P + "msisdn"))

    def _rules(self, now_ms: int) -> list[tuple[pl.Expr, Reason, pl.Expr]]:
        """(condition, reason, detail) in priority order."""
        start, end = pl.col("period_start_ms"), pl.col("period_end_ms")
        mcc, mnc = pl.col("mcc").cast(pl.Utf8), pl.col("mnc").cast(pl.Utf8)
        serving_ok = mcc.str.contains(r"^[0-9]{3}$") & mnc.str.contains(r"^[0-9]{2,3}$")
        negative = {k: pl.col(k) < 0 for k in COUNTERS}
        negative_text = pl.concat_str(
            [pl.when(n).then(pl.format("{}={}", pl.lit(k), pl.col(k))) for k, n in negative.items()],
            separator=", ",
            ignore_nulls=True,
        )
        bad_id = Reason.INVALID_IDENTIFIER
        return [
            (~_w("iccid_ok"), bad_id, _w("iccid_detail")),
            (~_w("imsi_ok"), bad_id, _w("imsi_detail")),
            (_w("msisdn").is_null(), bad_id, pl.format("msisdn '{}' is not E.164", _txt("msisdn", 40))),
            (~_w("imei_ok"), bad_id, _w("imei_detail")),
            (
                ~serving_ok.fill_null(False),
                bad_id,
                pl.format("serving network mcc='{}' mnc='{}' is not 3 + 2/3 digits", _txt("mcc"), _txt("mnc")),
            ),
            (
                start.is_null() | end.is_null() | (end < start),
                Reason.INVALID_PERIOD,
                pl.format("period_end_ms={} before period_start_ms={}", _txt("period_end_ms"), _txt("period_start_ms")),
            ),
            (pl.any_horizontal(negative.values()).fill_null(False), Reason.NEGATIVE_COUNTER, negative_text + " < 0"),
            (
                end > now_ms + self.future_tolerance_ms,
                Reason.FUTURE_TIMESTAMP,
                pl.format(
                    "period_end_ms={} is {} ms ahead of now (tolerance {} ms)",
                    end,
                    end - now_ms,
                    pl.lit(self.future_tolerance_ms),
                ),
            ),
            (
                start < now_ms - self.lateness_ms,
                Reason.TOO_LATE,
                pl.format(
                    "period_start_ms={} is older than the lateness horizon of {} ms", start, pl.lit(self.lateness_ms)
                ),
            ),
        ]

    def _reason_detail(self, now_ms: int) -> list[pl.Expr]:
        rules = self._rules(now_ms)
        cond, why, text = rules[0]
        reason, detail = pl.when(cond).then(pl.lit(why.value)), pl.when(cond).then(text)
        for cond, why, text in rules[1:]:
            reason, detail = reason.when(cond).then(pl.lit(why.value)), detail.when(cond).then(text)
        none = pl.lit(None, dtype=pl.Utf8)
        return [reason.otherwise(none).alias("reason"), detail.otherwise(none).alias("detail")]

    def __call__(self, frame: pl.DataFrame, now_ms: int) -> tuple[pl.DataFrame, pl.DataFrame]:
        columns = frame.columns
        work = self._annotate(frame).with_columns(self._reason_detail(now_ms))
        bad = pl.col("reason").is_not_null()
        rejected = work.filter(bad).select(*columns, "reason", "detail")
        luhn_flag = (
            pl.when(pl.col(_P + "luhn"))
            .then(pl.lit(0, dtype=pl.UInt32))
            .otherwise(pl.lit(int(Flag.ICCID_LUHN_FAILED), dtype=pl.UInt32))
        )
        if "flags" in columns:
            luhn_flag = pl.col("flags").cast(pl.UInt32).fill_null(0) | luhn_flag
        accepted = work.filter(~bad).with_columns(
            pl.col(_P + "iccid_norm").alias("iccid"),
            pl.col(_P + "msisdn").alias("msisdn"),
            luhn_flag.alias("flags"),
            pl.col(_P + "home_mcc").alias("home_mcc"),
            pl.col(_P + "home_mnc").alias("home_mnc"),
            (pl.col("mcc").cast(pl.Utf8) != pl.col(_P + "home_mcc")).alias("roaming"),
        )
        extra = ["flags", "home_mcc", "home_mnc", "roaming"]
        return accepted.select(*[c for c in columns if c not in extra], *extra), rejected
