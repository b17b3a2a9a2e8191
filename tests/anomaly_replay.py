"""Replay simulated meter readings through the meter rules, in memory, and score them on the ground truth.

The stream's view is reproduced: accepted, de-duplicated, tenant-tagged readings (the real
decode → validate → de-duplicate → tag stages) are cut into batches, every batch's
intervals and register events come from the stream's :class:`IntervalDeriver` (whose store
is the previous batches), and each rule sees the batch numbered by one ``Numbering``, as in the stage.

Episodes follow the lifecycle: a condition rule's episode runs from a firing evaluation
until ``clear_after`` consecutive non-firing ones; an event rule's until ``quiet_period_s``
passes without a firing one. An episode matches a fault of the same device and rule when
[first, last] overlaps [fault ts − 1 h, fault end + 1 h].
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import polars as pl

from pipeline.anomaly import RULES, Context, MeterRule, Numbering, Policy, empty_evaluations
from pipeline.catalogue import load_catalogue
from pipeline.codecs import Decoder, Encoder, SchemaStore, decode_readings, decode_registrations
from pipeline.derive import (
    affected_ranges,
    compute_intervals_many,
    params_frame,
    register_params,
    replacements_frame,
    window_many,
)
from pipeline.envelope import RawMessage
from pipeline.simulate import READINGS_TOPIC, REGISTRY_TOPIC, Scenario, SimConfig, build_scenario
from pipeline.tenancy import Registry, tag_frame
from pipeline.validation import DuplicateFilter, ReadingValidator

HOUR = 3_600_000
DAY = 86_400_000
FAULT_RULE = {
    "spike": "spike",
    "flatline": "flatline",
    "gap": "gap",
    "reset": "negative_delta",
    "voltage_out_of_band": "voltage_out_of_band",
    "low_power_factor": "low_power_factor",
    "fuel_drop": "fuel_drop",
}
READINGS_SCHEMA = {
    "tenant_id": pl.Utf8,
    "site_id": pl.Utf8,
    "device_id": pl.Utf8,
    "quantity": pl.Utf8,
    "ts_ms": pl.Int64,
    "value": pl.Float64,
    "flags": pl.UInt32,
    "src_offset": pl.Int64,
}
INTERVALS_SCHEMA = {
    "tenant_id": pl.Utf8,
    "site_id": pl.Utf8,
    "device_id": pl.Utf8,
    "quantity": pl.Utf8,
    "interval_start_ms": pl.Int64,
    "measured": pl.Float64,
    "estimated": pl.Float64,
    "flags": pl.UInt32,
    "n_readings": pl.UInt32,
}
EVENTS_SCHEMA = {
    "tenant_id": pl.Utf8,
    "site_id": pl.Utf8,
    "device_id": pl.Utf8,
    "quantity": pl.Utf8,
    "kind": pl.Utf8,
    "ts_ms": pl.Int64,
    "prev_ts_ms": pl.Int64,
    "prev_value": pl.Float64,
    "value": pl.Float64,
    "delta": pl.Float64,
    "cap": pl.Float64,
}


@dataclass(frozen=True)
class Fleet:
    readings: pl.DataFrame  # MeterBatch.readings columns, sorted by (ts_ms, device_id, quantity)
    registry: Registry
    faults: list[dict[str, Any]]
    now_ms: int


def simulated_fleet(config: SimConfig, now_ms: int) -> Fleet:
    store = SchemaStore.load()
    decode = Decoder(store)
    sc: Scenario = build_scenario(config, now_ms, Encoder(store))

    def raw(topic: str, msgs: Sequence[Any]) -> list[RawMessage]:
        return [RawMessage(m.topic, 0, i, m.key, m.value) for i, m in enumerate(msgs) if m.topic == topic]

    regs, _ = decode_registrations(raw(REGISTRY_TOPIC, sc.registrations), decode)
    registry = Registry()
    for _, record, _ in regs:
        registry.put(record)
    frame, _ = decode_readings(raw(READINGS_TOPIC, sc.telemetry), decode)
    accepted, _ = ReadingValidator(load_catalogue(), lateness_ms=int(config.lateness_days * DAY))(frame, now_ms)
    fresh, _, _ = DuplicateFilter()(accepted)
    tagged, _ = tag_frame(fresh, registry)
    readings = (
        tagged.with_columns(src_offset=pl.col("msg_idx").cast(pl.Int64) * 1000 + pl.col("rec_idx"))
        .select(list(READINGS_SCHEMA))
        .cast(READINGS_SCHEMA)  # type: ignore[arg-type]
        .sort("ts_ms", "device_id", "quantity", "src_offset")
    )
    return Fleet(readings, registry, sc.truth.faults, now_ms)


def split_by_time(readings: pl.DataFrame, batch_ms: int) -> list[pl.DataFrame]:
    """Event-time batches (a reading's channels stay together)."""
    part = readings.with_columns(_b=pl.col("ts_ms") // batch_ms)
    return [p.drop("_b") for p in part.partition_by("_b", maintain_order=True)]


def split_at(readings: pl.DataFrame, cuts: Iterable[int]) -> list[pl.DataFrame]:
    """Batches cut before the given row positions, moved forward to the next reading boundary."""
    keys = readings.select(k=pl.concat_str("device_id", pl.col("ts_ms").cast(pl.Utf8)))["k"].to_list()
    bounds, n = [0], len(keys)
    for c in sorted(set(cuts)):
        while 0 < c < n and keys[c] == keys[c - 1]:
            c += 1
        if bounds[-1] < c < n:
            bounds.append(c)
    bounds.append(n)
    return [readings.slice(a, b - a) for a, b in itertools.pairwise(bounds) if b > a]


class StreamDerive:
    """The derive stage's view of a batch: intervals and register events of the affected ranges,
    recomputed from every reading seen so far (the pure functions of :mod:`pipeline.derive`)."""

    KEYS: ClassVar[list[str]] = ["tenant_id", "device_id", "quantity"]

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.catalogue = load_catalogue()
        self.cumulative = self.catalogue.cumulative_codes()
        self.seen = pl.DataFrame(
            schema={k: pl.Utf8 for k in self.KEYS} | {"ts_ms": pl.Int64, "value": pl.Float64, "seq": pl.Int64}
        )
        self.sites: dict[str, str] = {}

    def __call__(self, batch: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        keys = self.KEYS
        new = batch.filter(pl.col("quantity").is_in(self.cumulative)).select(*keys, "ts_ms", "value", seq="src_offset")
        if new.is_empty():
            return pl.DataFrame(schema=INTERVALS_SCHEMA), pl.DataFrame(schema=EVENTS_SCHEMA)
        self.sites.update(dict(batch.select("device_id", "site_id").unique("device_id").iter_rows()))
        ranges = affected_ranges(new, self.seen, keys)
        self.seen = pl.concat([self.seen, new])
        window = window_many(self.seen.join(new.select(keys).unique(), on=keys, how="semi"), ranges, keys)
        params = {
            k: register_params(k[2], self.registry.get(k[1]), self.catalogue)
            for k in new.select(keys).unique().iter_rows()
        }
        res = compute_intervals_many(
            window, params_frame(params, keys), keys=keys, replacements=replacements_frame(params, keys), ranges=ranges
        )
        site = pl.DataFrame({"device_id": list(self.sites), "site_id": list(self.sites.values())})
        intervals = res.intervals.join(site, on="device_id", how="left").select(list(INTERVALS_SCHEMA))
        events = res.events.filter(pl.col("kind") != "conflict").join(site, on="device_id", how="left")
        return intervals.cast(INTERVALS_SCHEMA), events.select(list(EVENTS_SCHEMA)).cast(EVENTS_SCHEMA)  # type: ignore[arg-type]


def replay(
    batches: Sequence[pl.DataFrame], registry: Registry, rules: Sequence[MeterRule], policy: Policy | None = None
) -> pl.DataFrame:
    """All evaluation rows of ``rules`` over ``batches`` (in order), with the stream's intervals and events."""
    policy = policy or Policy()
    derive, numbering = StreamDerive(registry), Numbering()
    out = []
    for b in batches:
        now = int(b["ts_ms"].max()) + 60_000
        intervals, events = derive(b)
        batch = numbering.batch(b, intervals, events)
        ctx = Context(policy, registry, now)
        out.extend(r(batch, ctx) for r in rules)
    frames = [f for f in out if f.height]
    return pl.concat(frames) if frames else empty_evaluations()


def episodes(evals: pl.DataFrame, policy: Policy | None = None) -> pl.DataFrame:
    """Alert episodes as the lifecycle would open them: rule, tenant_id, subject_id, first, last, count."""
    policy = policy or Policy()
    rows: list[tuple[str, str, str, int, int, int]] = []
    ordered = evals.sort("rule", "tenant_id", "subject_id", "ts_ms")
    for (rule, tenant, subject), g in ordered.group_by("rule", "tenant_id", "subject_id", maintain_order=True):
        p = policy.params(str(rule), str(tenant), "")
        event = RULES[str(rule)].kind == "event"
        quiet_ms, clear = int(p["quiet_period_s"]) * 1000, int(p["clear_after"])
        cur: list[int] | None = None
        last_ts = None
        for ts, firing in zip(g["ts_ms"].to_list(), g["firing"].to_list(), strict=True):
            if last_ts is not None and ts <= last_ts:
                continue  # the lifecycle ignores evaluations that are not newer
            last_ts = ts
            if cur is not None and event and firing and ts - cur[1] >= quiet_ms:
                rows.append((str(rule), str(tenant), str(subject), cur[0], cur[1], cur[2]))
                cur = None
            if firing:
                cur = [ts, ts, 1, 0] if cur is None else [cur[0], ts, cur[2] + 1, 0]
            elif cur is not None and not event:
                cur[3] += 1
                if cur[3] >= clear:
                    rows.append((str(rule), str(tenant), str(subject), cur[0], cur[1], cur[2]))
                    cur = None
        if cur is not None:
            rows.append((str(rule), str(tenant), str(subject), cur[0], cur[1], cur[2]))
    return pl.DataFrame(
        rows,
        schema={
            "rule": pl.Utf8,
            "tenant_id": pl.Utf8,
            "subject_id": pl.Utf8,
            "first": pl.Int64,
            "last": pl.Int64,
            "count": pl.Int64,
        },
        orient="row",
    )


@dataclass(frozen=True)
class Score:
    faults: int
    detected: int
    episodes: int
    true_episodes: int

    @property
    def recall(self) -> float:
        return self.detected / self.faults if self.faults else 1.0

    @property
    def precision(self) -> float:
        return self.true_episodes / self.episodes if self.episodes else 1.0


def score(eps: pl.DataFrame, faults: Sequence[dict[str, Any]], margin_ms: int = HOUR) -> dict[str, Score]:
    """Per rule: faults injected/detected, episodes raised/explained by a fault."""
    by_rule: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
    for f in faults:
        rule = FAULT_RULE.get(f["kind"])
        if rule and f.get("device_id"):
            by_rule[rule].append((f["device_id"], f["ts"] - margin_ms, f["end_ts"] + margin_ms))
    out = {}
    for rule in sorted(set(by_rule) | set(eps["rule"].unique().to_list())):
        e = eps.filter(pl.col("rule") == rule)
        fs = by_rule.get(rule, [])
        spans = list(zip(e["subject_id"].to_list(), e["first"].to_list(), e["last"].to_list(), strict=True))

        def hit(a: tuple[str, int, int], b: tuple[str, int, int]) -> bool:
            return a[0] == b[0] and a[1] <= b[2] and b[1] <= a[2]

        detected = sum(any(hit(f, s) for s in spans) for f in fs)
        true_eps = sum(any(hit(f, s) for f in fs) for s in spans)
        out[rule] = Score(len(fs), detected, len(spans), true_eps)
    return out


def fleet_summary(scores: dict[str, Score]) -> str:
    lines = [f"{'rule':24} faults detected recall episodes true precision"]
    for rule, s in scores.items():
        lines.append(
            f"{rule:24} {s.faults:6} {s.detected:8} {s.recall:6.2f} {s.episodes:8} {s.true_episodes:4} "
            f"{s.precision:9.2f}"
        )
    return "\n".join(lines)
