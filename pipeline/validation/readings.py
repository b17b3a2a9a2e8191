"""Columnar validation of exploded meter readings (one row per channel).

Catalogue-driven (SPEC §5 Validate): identifier format, timestamp window, known
quantity, finite value, plausible range. Each row gets at most one reason, the
first matching rule in :data:`RULES` order; a bad channel never removes the
good channels of the same reading. Rejections are rows, not exceptions.
"""

from __future__ import annotations

import polars as pl

from pipeline.catalogue import Catalogue
from pipeline.envelope import Reason
from pipeline.flags import Flag
from pipeline.validation.identifiers import device_id_ok

RULES: tuple[Reason, ...] = (
    Reason.INVALID_IDENTIFIER,
    Reason.FUTURE_TIMESTAMP,
    Reason.TOO_LATE,
    Reason.UNKNOWN_QUANTITY,
    Reason.NON_FINITE,
    Reason.OUT_OF_RANGE,
)

_LO, _HI, _RANGE, _REASON = "__lo", "__hi", "__range", "__reason"


def _fmt_bound(x: float) -> str:
    return f"{x:g}"


class ReadingValidator:
    """Split a readings frame into ``(accepted, rejected)``.

    ``accepted`` = input columns + ``flags`` (UInt32; ``DEVICE_QUALITY`` when
    ``quality`` is set and non-zero, OR-ed into an existing ``flags`` column).
    ``rejected`` = input columns + ``reason`` and ``detail`` (Utf8).
    A null ``ts_ms`` is rejected as ``too_late`` (no usable time).
    """

    def __init__(self, catalogue: Catalogue, *, lateness_ms: int, future_tolerance_ms: int = 300_000):
        if lateness_ms < 0 or future_tolerance_ms < 0:
            raise ValueError("lateness_ms and future_tolerance_ms must be >= 0")
        self.lateness_ms = int(lateness_ms)
        self.future_tolerance_ms = int(future_tolerance_ms)
        self.catalogue_version = catalogue.version
        qs = [catalogue[c] for c in catalogue.codes()]
        self._bounds = pl.DataFrame(
            {
                "quantity": [q.code for q in qs],
                _LO: [q.min for q in qs],
                _HI: [q.max for q in qs],
                _RANGE: [f"[{_fmt_bound(q.min)}, {_fmt_bound(q.max)}] {q.unit}" for q in qs],
            },
            schema={"quantity": pl.Utf8, _LO: pl.Float64, _HI: pl.Float64, _RANGE: pl.Utf8},
        )

    def _reason(self, now_ms: int) -> pl.Expr:
        ts, value = pl.col("ts_ms"), pl.col("value")
        return (
            pl.when(~device_id_ok(pl.col("device_id")))
            .then(pl.lit(Reason.INVALID_IDENTIFIER.value))
            .when(ts > now_ms + self.future_tolerance_ms)
            .then(pl.lit(Reason.FUTURE_TIMESTAMP.value))
            .when((ts < now_ms - self.lateness_ms) | ts.is_null())
            .then(pl.lit(Reason.TOO_LATE.value))
            .when(pl.col(_LO).is_null())
            .then(pl.lit(Reason.UNKNOWN_QUANTITY.value))
            .when(~value.is_finite().fill_null(False))
            .then(pl.lit(Reason.NON_FINITE.value))
            .when((value < pl.col(_LO)) | (value > pl.col(_HI)))
            .then(pl.lit(Reason.OUT_OF_RANGE.value))
            .otherwise(pl.lit(None, dtype=pl.Utf8))
            .alias(_REASON)
        )

    def _detail(self, now_ms: int) -> pl.Expr:
        r, ts, q = pl.col("reason"), pl.col("ts_ms"), pl.col("quantity").fill_null("null")
        value = pl.col("value").cast(pl.Utf8).fill_null("null")
        return (
            pl.when(r == Reason.INVALID_IDENTIFIER.value)
            .then(
                pl.format(
                    "device_id '{}' is not a valid identifier",
                    pl.col("device_id").str.slice(0, 64).fill_null("null"),
                )
            )
            .when(r == Reason.FUTURE_TIMESTAMP.value)
            .then(
                pl.format(
                    "ts_ms={} is {} ms ahead of now (tolerance {} ms)",
                    ts,
                    ts - now_ms,
                    pl.lit(self.future_tolerance_ms),
                )
            )
            .when(r == Reason.TOO_LATE.value)
            .then(
                pl.format(
                    "ts_ms={} is older than the lateness horizon of {} ms",
                    ts.cast(pl.Utf8).fill_null("null"),
                    pl.lit(self.lateness_ms),
                )
            )
            .when(r == Reason.UNKNOWN_QUANTITY.value)
            .then(pl.format("quantity '{}' is not in catalogue {}", q, pl.lit(self.catalogue_version)))
            .when(r == Reason.NON_FINITE.value)
            .then(pl.format("{}={} is not a finite number", q, value))
            .otherwise(pl.format("{}={} outside {}", q, value, pl.col(_RANGE)))
            .alias("detail")
        )

    def __call__(self, frame: pl.DataFrame, now_ms: int) -> tuple[pl.DataFrame, pl.DataFrame]:
        columns = frame.columns
        work = frame.join(self._bounds, on="quantity", how="left", maintain_order="left")
        work = work.with_columns(self._reason(now_ms))
        bad = pl.col(_REASON).is_not_null()

        quality = pl.col("quality")
        flags = (
            pl.when(quality.is_not_null() & (quality != 0))
            .then(pl.lit(int(Flag.DEVICE_QUALITY), dtype=pl.UInt32))
            .otherwise(pl.lit(0, dtype=pl.UInt32))
        )
        if "flags" in columns:
            flags = pl.col("flags").cast(pl.UInt32).fill_null(0) | flags
        accepted = work.filter(~bad).select(*[c for c in columns if c != "flags"], flags.alias("flags"))

        rejected = (
            work.filter(bad)
            .rename({_REASON: "reason"})
            .with_columns(self._detail(now_ms))
            .select(*columns, "reason", "detail")
        )
        return accepted, rejected
