"""The SIM rules of ``domain/anomalies.md`` as columnar, stateful callables (see :mod:`.inputs`).

Per record: ``sim_roaming`` (stateless), ``sim_imei_change`` and ``sim_dormant_wake`` (event
rules: firing rows only, evaluated once a record is settled, see :mod:`.sim_history`),
``sim_sms_flood`` (condition rule over the trailing 24 h). Per day and per cycle:
``sim_data_spike`` and ``sim_over_plan`` in :mod:`.sim_volume`. Every rule's subject is the
SIM pseudonym ``sim_id``; the raw ICCID is only used to look the registration up.

Condition rules whose value can only grow with late records (``sim_sms_flood``,
``sim_over_plan``) evaluate a record as soon as it arrives and re-evaluate the later records
of the SIM when an earlier one arrives late, emitting a row only when the outcome changed;
so the set of firing evaluations does not depend on how records are ordered or batched.
"""

from __future__ import annotations

import polars as pl

from pipeline.anomaly.catalogue import RULES
from pipeline.anomaly.inputs import Context, SimBatch, SimRule
from pipeline.anomaly.model import empty_evaluations
from pipeline.anomaly.sim_history import DAY_MS, HOUR_MS, KEY, LATENESS_MS, SimHistory, finish, plans, runs
from pipeline.anomaly.sim_volume import SimDataSpike, SimOverPlan

__all__ = ["SimDataSpike", "SimDormantWake", "SimImeiChange", "SimOverPlan", "SimRoaming", "SimSmsFlood", "sim_rules"]

_START = pl.col("period_start_ms")


def _short(col: str) -> pl.Expr:
    return pl.col(col).str.slice(0, 8)


class SimRoaming:
    """Serving MCC ≠ the IMSI's (home) MCC while the registration says ``stationary``; one row per record."""

    def __init__(self) -> None:
        self.spec = RULES["sim_roaming"]

    def __call__(self, batch: SimBatch, ctx: Context) -> pl.DataFrame:
        u = batch.usage
        if u.height == 0:
            return empty_evaluations()
        u = u.unique([*KEY, "period_start_ms", "period_end_ms"], keep="first", maintain_order=True)
        home = pl.col("home_mcc").cast(pl.Utf8)
        roaming = (pl.col("mcc").cast(pl.Utf8) != home).fill_null(False)
        if "roaming" in u.columns:  # the validator's flag when the home MCC is not in the batch
            roaming = pl.when(home.is_null()).then(pl.col("roaming").cast(pl.Boolean)).otherwise(roaming)
        stationary = pl.col("stationary").fill_null(False)
        out = u.join(plans(ctx.registry, u).select(*KEY, "stationary"), on=KEY, how="left").select(
            *KEY, "site_id", _START.alias("ts_ms"),
            (roaming & stationary).alias("firing"),
            pl.format("serving network {}-{} (home MCC {}){}", "mcc", "mnc", home,
                      pl.when(stationary).then(pl.lit(" on a stationary SIM")).otherwise(pl.lit(""))).alias("message"),
        )  # fmt: skip
        return finish(out, ctx, self.spec.id)


class SimImeiChange:
    """The IMEI pseudonym differs from the previous one seen for the SIM in event-time order (event rule)."""

    def __init__(self) -> None:
        self.spec = RULES["sim_imei_change"]
        self._history = SimHistory({"imei_id": pl.Utf8()}, retain_ms=LATENESS_MS + 2 * HOUR_MS,
                                   state={"done": pl.lit(False)})  # fmt: skip

    def __call__(self, batch: SimBatch, ctx: Context) -> pl.DataFrame:
        work = self._history.ingest(batch.usage)
        if work.height == 0:
            return empty_evaluations()
        has = pl.col("imei_id").is_not_null()
        work = runs(work.with_columns(pl.when(pl.col("imei_id") != "").then(pl.col("imei_id")).alias("imei_id")))
        work = work.with_columns(
            prev_imei=pl.col("imei_id").shift(1).forward_fill().over(KEY),
            prev_run=pl.when(has).then(pl.col("run")).shift(1).forward_fill().over(KEY),
        )
        # final once nothing can arrive between the previous IMEI-bearing record and this one
        ready = ~pl.col("done") & (
            (_START <= pl.col("horizon_ms")) | (pl.col("prev_run") == pl.col("run")).fill_null(False)
        )
        work = work.with_columns(ready=ready)
        fired = work.filter(pl.col("ready") & has & pl.col("prev_imei").is_not_null()
                            & (pl.col("imei_id") != pl.col("prev_imei")))  # fmt: skip
        out = fired.select(*KEY, "site_id", _START.alias("ts_ms"), pl.lit(True).alias("firing"),
                           pl.format("IMEI changed ({}… → {}…): SIM moved to another device", _short("prev_imei"),
                                     _short("imei_id")).alias("message"))  # fmt: skip
        cutoff = pl.col("watermark_ms") - self._history.retain_ms
        anchor = pl.when(has & (_START < cutoff)).then(_START).max().over(KEY)  # the last IMEI before the cutoff
        self._history.commit(work.with_columns(done=pl.col("done") | pl.col("ready")), keep=_START == anchor)
        return finish(out, ctx, self.spec.id)


class SimDormantWake:
    """First record with sessions after ≥ ``dormant_days`` without any (event rule).

    Silence is counted from the end of the SIM's last record with sessions, or from its first
    record seen when it never had one; a SIM's very first record is never a wake.
    """

    def __init__(self) -> None:
        self.spec = RULES["sim_dormant_wake"]
        self._history = SimHistory({"sessions": pl.Int64()}, retain_ms=LATENESS_MS + 2 * HOUR_MS,
                                   state={"done": pl.lit(False)})  # fmt: skip
        self._anchors = pl.DataFrame(schema={"tenant_id": pl.Utf8(), "sim_id": pl.Utf8(), "first_ms": pl.Int64(),
                                             "active_end_ms": pl.Int64()})  # fmt: skip

    def __call__(self, batch: SimBatch, ctx: Context) -> pl.DataFrame:
        work = self._history.ingest(batch.usage)
        if work.height == 0:
            return empty_evaluations()
        active = pl.col("sessions").fill_null(0) > 0
        work = runs(work).join(self._anchors, on=KEY, how="left", maintain_order="left")
        prev_active = pl.when(active).then(pl.col("period_end_ms")).cum_max().forward_fill().shift(1).over(KEY)
        first = pl.min_horizontal(pl.col("first_ms"), _START.first().over(KEY))
        since = pl.coalesce(
            pl.max_horizontal(pl.col("active_end_ms"), prev_active), pl.when(first < _START).then(first)
        )
        work = work.with_columns(silent_ms=_START - since, ready=~pl.col("done") & pl.col("settled"))
        work = ctx.policy.frame(self.spec.id, work.with_columns(pl.col("site_id").fill_null("")), ["dormant_days"])
        fired = work.filter(pl.col("ready") & active & (pl.col("silent_ms") >= pl.col("dormant_days") * DAY_MS))
        days = pl.col("silent_ms") / DAY_MS
        out = fired.select(*KEY, "site_id", _START.alias("ts_ms"), pl.lit(True).alias("firing"),
                           days.alias("observed"), pl.col("dormant_days").cast(pl.Float64).alias("threshold"),
                           pl.format("first session after {} silent days", days.round(1)).alias("message"))  # fmt: skip
        dropped = self._history.commit(work.with_columns(done=pl.col("done") | pl.col("ready")))
        if dropped.height:
            gone = dropped.group_by(KEY).agg(
                _START.min().alias("first_ms"),
                pl.when(active).then(pl.col("period_end_ms")).max().alias("active_end_ms"),
            )
            self._anchors = (pl.concat([self._anchors, gone.select(self._anchors.columns)])
                             .group_by(KEY).agg(pl.col("first_ms").min(), pl.col("active_end_ms").max()))  # fmt: skip
        return finish(out, ctx, self.spec.id)


class SimSmsFlood:
    """Sum of ``sms_mo`` over the trailing 24 h (records starting in (start − 24 h, start]) above ``threshold``."""

    def __init__(self) -> None:
        self.spec = RULES["sim_sms_flood"]
        self._history = SimHistory({"sms_mo": pl.Int64()}, retain_ms=LATENESS_MS + DAY_MS + HOUR_MS,
                                   state={"out": pl.lit(None, pl.Int8)})  # fmt: skip

    def __call__(self, batch: SimBatch, ctx: Context) -> pl.DataFrame:
        work = self._history.ingest(batch.usage)
        if work.height == 0:
            return empty_evaluations()
        total = pl.col("sms_mo").fill_null(0).rolling_sum_by("period_start_ms", window_size=f"{DAY_MS}i").over(KEY)
        work = ctx.policy.frame(self.spec.id, work.with_columns(pl.col("site_id").fill_null(""), total=total),
                                ["threshold"])  # fmt: skip
        code = (pl.col("total") > pl.col("threshold")).cast(pl.Int8)
        work = work.with_columns(code=pl.when(_START >= pl.col("since_ms")).then(code))
        changed = pl.col("code").is_not_null() & (pl.col("out").is_null() | (pl.col("out") != pl.col("code")))
        out = work.filter(changed).select(
            *KEY, "site_id", _START.alias("ts_ms"), (pl.col("code") == 1).alias("firing"),
            pl.col("total").cast(pl.Float64).alias("observed"), pl.col("threshold").cast(pl.Float64).alias("threshold"),
            pl.format("{} SMS MO in 24 h (threshold {})", "total", "threshold").alias("message"),
        )  # fmt: skip
        self._history.commit(work.with_columns(out=pl.coalesce("code", "out")))
        return finish(out, ctx, self.spec.id)


def sim_rules() -> list[SimRule]:
    """A fresh instance of every SIM rule (each keeps its own bounded state)."""
    return [SimDataSpike(), SimOverPlan(), SimRoaming(), SimImeiChange(), SimDormantWake(), SimSmsFlood()]
