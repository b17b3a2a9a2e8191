"""The anomaly stage of the stream: rules → tracker → transitions, as an ``alerts_store`` table.

:class:`MeterAlerts` wraps the derive stage of ``meter.readings``/``meter.frames``: it runs
the interval derivation, then the meter rules over the batch's readings, intervals and
register events, and adds the transitions as an ``alerts_store`` Arrow table. The runner
publishes exactly those rows on the alerts topic before it acknowledges the batch
(:mod:`pipeline.worker.runner`), so the table is the one record of what was published.
:class:`SimAlerts` does the same for ``sim.usage``.

Gap attribution: a raised ``gap`` of a meter whose registration names a SIM is annotated
``cause`` = connectivity | device | unknown from that SIM's stored usage over the gap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace

import polars as pl
import pyarrow as pa

from pipeline.anomaly.inputs import Context, MeterBatch, MeterRule, SimBatch, SimRule
from pipeline.anomaly.lifecycle import AlertTracker
from pipeline.anomaly.model import State, Transition
from pipeline.anomaly.numbering import Numbering
from pipeline.anomaly.policy import Policy
from pipeline.errors import PROCESSING_FAILURES
from pipeline.sinks.alerts import alerts_table
from pipeline.tenancy import Registry

log = logging.getLogger(__name__)

__all__ = ["Attribute", "MeterAlerts", "SimAlerts"]

Derive = Callable[[pl.DataFrame, int], dict[str, pa.Table]]
# (tenant, meter registration's ICCID, gap start ms, gap end ms) -> (cause, sim pseudonym)
Attribute = Callable[[str, str, int, int], tuple[str, str]]


def _ms(frame: pl.DataFrame, *cols: str) -> pl.DataFrame:
    return frame.with_columns(pl.col(c).dt.epoch("ms").alias(f"{c}_ms") for c in cols if c in frame.columns)


def _polars(table: pa.Table | None) -> pl.DataFrame:
    if table is None or table.num_rows == 0:
        return pl.DataFrame()
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


class _Stage:
    def __init__(self, tracker: AlertTracker, policy: Policy, registry: Registry) -> None:
        self.tracker = tracker
        self._policy = policy
        self._registry = registry
        self._stream_ms = 0
        self.evaluations = 0  # rows handed to the lifecycle (rules leave out those it would ignore)

    def _run(self, rules: Sequence[MeterRule | SimRule], batch: MeterBatch | SimBatch, now_ms: int,
             newest_ms: int) -> list[Transition]:  # fmt: skip
        ctx = Context(self._policy, self._registry, now_ms, self.tracker.open_subjects())
        frames = []
        for rule in rules:
            try:
                frames.append(rule(batch, ctx))  # type: ignore[arg-type]
            except PROCESSING_FAILURES:  # a rule bug must not stop the pipeline: log it, the others still run
                log.exception("anomaly rule %s failed on a batch; its evaluations are skipped", rule.spec.id)
        evals = pl.concat([f for f in frames if f.height], how="vertical") if any(f.height for f in frames) else None
        self._stream_ms = max(self._stream_ms, min(newest_ms, now_ms))
        self.evaluations += 0 if evals is None else evals.height
        return self.tracker.apply(evals if evals is not None else pl.DataFrame(), self._stream_ms)


class MeterAlerts(_Stage):
    """A derive hook: ``derive`` (may be None) then the meter rules; returns both sets of tables."""

    def __init__(self, rules: Sequence[MeterRule], tracker: AlertTracker, policy: Policy, registry: Registry,
                 *, derive: Derive | None = None, attribute: Attribute | None = None) -> None:  # fmt: skip
        super().__init__(tracker, policy, registry)
        self._rules = list(rules)
        self._derive = derive
        self._attribute = attribute
        self._numbering = Numbering()  # the rules' series numbers: one per stage, for the stage's life

    def __call__(self, readings: pl.DataFrame, now_ms: int) -> dict[str, pa.Table]:
        tables = self._derive(readings, now_ms) if self._derive is not None else {}
        batch = self._numbering.batch(
            readings,
            intervals=_ms(_polars(tables.get("intervals_store")), "interval_start"),
            events=_ms(_polars(tables.get("register_events_store")), "ts", "prev_ts"),
        )
        newest = int(readings["ts_ms"].max()) if readings.height else 0  # type: ignore[arg-type]
        transitions = self._attribute_gaps(self._run(self._rules, batch, now_ms, newest))
        if transitions:
            tables["alerts_store"] = alerts_table(transitions, now_ms)
        return tables

    def _attribute_gaps(self, transitions: list[Transition]) -> list[Transition]:
        if self._attribute is None or not any(t.rule == "gap" for t in transitions):
            return transitions
        causes: dict[str, dict[str, str]] = {}
        for t in transitions:
            if t.rule != "gap" or t.state is not State.RAISED:
                continue
            reg = self._registry.get(t.subject_id)
            if reg is None or not reg.sim_iccid:
                continue
            # the gap rule stamps the first missed reading (last reading + period) and reports the hole
            # (resumed - last reading) in seconds and the limit (period_factor x period) as threshold
            factor = float(self._policy.params("gap", t.tenant_id, t.site_id)["period_factor"]) or 1.0
            period = int((t.threshold or 0) * 1000 / factor)
            end = t.first_seen - period + int((t.observed or 0) * 1000)
            try:
                cause, sim_id = self._attribute(t.tenant_id, reg.sim_iccid, t.first_seen, end)
            except PROCESSING_FAILURES:
                log.exception("gap attribution for %s failed", t.subject_id)
                cause, sim_id = "unknown", ""
            causes[t.alert_id] = {"cause": cause, "sim_id": sim_id}
            self.tracker.annotate(t.key, causes[t.alert_id])
        return [replace(t, attributes={**t.attributes, **causes[t.alert_id]}) if t.alert_id in causes else t
                for t in transitions]  # fmt: skip


class SimAlerts(_Stage):
    """The ``sim.usage`` hook: the SIM rules over a batch's accepted usage records."""

    def __init__(self, rules: Sequence[SimRule], tracker: AlertTracker, policy: Policy, registry: Registry) -> None:
        super().__init__(tracker, policy, registry)
        self._rules = list(rules)

    def __call__(self, usage: pl.DataFrame, now_ms: int) -> dict[str, pa.Table]:
        usage = _ms(usage, "period_start", "period_end")
        newest = int(usage["period_end_ms"].max()) if usage.height else 0  # type: ignore[arg-type]
        transitions = self._run(self._rules, SimBatch(usage), now_ms, newest)
        return {"alerts_store": alerts_table(transitions, now_ms)} if transitions else {}
