"""``telemetry evaluate``: detection quality of the anomaly rules on a simulated fleet.

Embedded broker + the real worker (as ``telemetry demo``); the simulator's fleet with every
kind of injected fault goes through it (registrations, then SIM usage, then meter data, so
that gap attribution finds the SIM's usage stored); the alert episodes in ClickHouse are
scored per rule against the ground truth (:mod:`pipeline.anomaly.quality`).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from pipeline.anomaly.quality import Episode, expected_alerts, late_deliveries, score
from pipeline.broker import embedded_broker, ensure_topics
from pipeline.broker.embedded import free_port
from pipeline.codecs import Decoder, Encoder, SchemaStore
from pipeline.demo import _start_worker, _table, _wait
from pipeline.settings import Settings
from pipeline.simulate.config import REGISTRY_TOPIC, SIM_USAGE_TOPIC
from pipeline.tenancy import Pseudonymizer

__all__ = ["run_evaluation"]


def _devices(registrations: list[Any]) -> tuple[dict[str, str], dict[str, str]]:
    """Device id -> gateway id, device id -> timezone, from the fleet's registrations."""
    decode = Decoder(SchemaStore.load())
    gateways, zones = {}, {}
    for m in registrations:
        _, r = decode(m.value)
        if r.get("gateway_id"):
            gateways[r["subject_id"]] = r["gateway_id"]
        if r.get("timezone"):
            zones[r["subject_id"]] = r["timezone"]
    return gateways, zones


def _episodes(client: Any) -> list[Episode]:
    _, rows = client.query(
        "SELECT rule, subject_id, toUnixTimestamp64Milli(min(first_seen)), toUnixTimestamp64Milli(max(last_seen)), "
        "argMax(attributes['cause'], published_at) FROM alerts_store FINAL GROUP BY alert_id, rule, subject_id"
    )
    return [Episode(r[0], r[1], int(r[2]), int(r[3]), r[4] or "") for r in rows]


def run_evaluation(settings: Settings, *, seed: int, tenants: int, sites_per_tenant: int, days: float,
                   console: Console, out: Path | None = None) -> dict[str, Any]:  # fmt: skip
    from pipeline.simulate import SimConfig, build_scenario, produce

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    run = f"evaluate_{int(time.time())}"  # its own database and group: earlier runs do not count
    settings = settings.model_copy(update={"consumer_group": run,
        "clickhouse_url": f"chdb://{(settings.data_dir / 'clickhouse').resolve()}?database={run}"})  # fmt: skip
    config = SimConfig(seed=seed, tenants=tenants, sites_per_tenant=sites_per_tenant, days=days, batch=True)
    with console.status("simulating the fleet…"):
        scenario = build_scenario(config, int(time.time() * 1000), Encoder(SchemaStore.load()))
    pseudonyms = Pseudonymizer(settings.pseudonym_secret)
    gateways, zones = _devices(scenario.registrations)
    expected = expected_alerts(scenario.truth.faults, lambda t, i: pseudonyms(t, i) or "",
                               start_ms=scenario.truth.start_ms, timezones=zones)  # fmt: skip
    sims = [m for m in scenario.telemetry if m.topic == SIM_USAGE_TOPIC]
    meters = [m for m in scenario.telemetry if m.topic != SIM_USAGE_TOPIC]
    counts: dict[str, int] = defaultdict(int)
    for m in meters:
        counts[m.topic] += 1
    started = time.monotonic()
    with embedded_broker(log_path=settings.data_dir / "broker.log") as broker:
        ensure_topics(broker.bootstrap, settings.topic_prefix, settings.topic_partitions)
        client = _start_worker(settings, broker.bootstrap, free_port(), console)
        try:
            phases = (
                ("registering", scenario.registrations, {REGISTRY_TOPIC: len(scenario.registrations)}),
                ("SIM usage", sims, {SIM_USAGE_TOPIC: len(sims)}),
                ("meter data", meters, dict(counts)),
            )
            for what, batch, topics in phases:
                produce(batch, bootstrap=broker.bootstrap, topic_prefix=settings.topic_prefix)
                _wait(client, topics, console, what)
            episodes = _episodes(client)
        finally:
            client.stop()
    scores = score(episodes, expected, late_deliveries(scenario.truth.faults, gateways))
    rows = []
    for s in sorted(scores.values(), key=lambda s: (s.injected == 0, s.rule)):
        if not (s.injected or s.episodes or s.warmup or s.late):
            continue
        aside = ", ".join(x for x in (f"{s.warmup} in warm-up" if s.warmup else "",
                                       f"{len(s.late)} late uploads" if s.late else "") if x)  # fmt: skip
        rows.append([s.rule, s.injected, s.detected, s.episodes, _fmt(s.recall), _fmt(s.precision),
                     f"{s.cause_correct}/{s.detected}" if s.rule == "gap" else "", aside])  # fmt: skip
    _table(console, f"Detection quality (seed {seed}, {tenants}x{sites_per_tenant} sites, {days:g} days)",
           ["rule", "injected", "detected", "episodes", "recall", "precision", "cause right", "not scored"],
           rows)  # fmt: skip
    end = datetime.fromtimestamp(scenario.truth.now_ms / 1000, UTC).isoformat()
    result = {
        "config": {
            "seed": seed,
            "tenants": tenants,
            "sites_per_tenant": sites_per_tenant,
            "days": days,
            "end": end,
        },
        "seconds": round(time.monotonic() - started, 1),
        "rules": [s.as_dict() for s in scores.values() if s.injected or s.episodes or s.warmup or s.late],
        "missed": [vars(x) if hasattr(x, "__dict__") else x.__repr__() for s in scores.values() for x in s.missed],
        "false_positives": [repr(e) for s in scores.values() for e in s.false][:200],
        "late_explained": [repr(e) for s in scores.values() for e in s.late][:200],
        "false_positives_near": _near(scenario.truth.faults, [e for s in scores.values() for e in s.false], gateways),
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1, sort_keys=True))
    return result


def _near(faults: list[dict[str, Any]], false: list[Episode], gateways: dict[str, str]) -> dict[str, dict[str, int]]:
    """Per rule, the other ground-truth events (e.g. ``late`` uploads of the device's gateway) within an
    hour of its false episodes: what the rule reacted to."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for e in false:
        who = {e.subject_id, gateways.get(e.subject_id, "")}
        kinds = {f["kind"] for f in faults if f.get("device_id") in who
                 and f["ts"] - 3_600_000 <= e.last_seen and e.first_seen <= f["end_ts"] + 3_600_000}  # fmt: skip
        for k in kinds or {"(none)"}:
            out[e.rule][k] += 1
    return {r: dict(v) for r, v in out.items()}


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.2f}"
