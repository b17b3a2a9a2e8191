"""Alert episodes: evaluations in, transitions out (raised → updated* → cleared), one id per episode.

Per (tenant, subject, rule) the tracker keeps the open episode, if any. A firing
evaluation opens one (``raised``) or extends it (count, last_seen; a severity change is
published as ``updated``, a repeat is not published). A condition rule's episode clears
after ``clear_after`` consecutive non-firing evaluations; an event rule's after its
``quiet_period_s`` of stream time without a firing one. Evaluations older than the last
one applied to a key are ignored, so re-delivered data neither re-raises nor clears.

The alert id is derived from the key and the first firing time, so a replay through a
fresh consumer group publishes the same ids. Open episodes are persisted through
``write`` (in the worker: a Faust global table, so a restart neither re-raises nor forgets).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import polars as pl

from pipeline.anomaly.catalogue import RULES
from pipeline.anomaly.model import Severity, State, Transition
from pipeline.anomaly.policy import Policy

__all__ = ["AlertTracker", "Episode", "alert_id"]

_NS = uuid.UUID("5b0f6a3e-52c1-4d0e-9a57-0c4f3b8d2e11")


def alert_id(key: str, first_seen: int) -> str:
    return str(uuid.uuid5(_NS, f"{key}|{first_seen}"))


@dataclass(frozen=True, slots=True)
class Episode:
    """A key's state: an open episode (``alert_id`` set) or only the watermark of a closed one."""

    last_eval: int  # event time of the newest evaluation applied
    alert_id: str = ""
    tenant_id: str = ""
    site_id: str = ""
    subject_id: str = ""
    subject_type: str = ""
    rule: str = ""
    severity: int = 0
    first_seen: int = 0
    last_seen: int = 0
    count: int = 0
    quiet: int = 0  # consecutive non-firing evaluations
    observed: float | None = None
    threshold: float | None = None
    message: str = ""
    attributes: tuple[tuple[str, str], ...] = ()

    def dumps(self) -> bytes:
        # not dataclasses.asdict: it deep-copies every field, the most of persisting an alert storm
        doc = {name: getattr(self, name) for name in _FIELDS}
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def loads(cls, raw: bytes) -> Episode:
        doc = json.loads(raw)
        doc["attributes"] = tuple(tuple(a) for a in doc.get("attributes") or ())
        return cls(**doc)

    def transition(self, state: State) -> Transition:
        return Transition(self.alert_id, self.tenant_id, self.subject_id, self.subject_type, self.rule,
                          Severity(self.severity), state, self.site_id, self.first_seen, self.last_seen, self.count,
                          self.observed, self.threshold, self.message, dict(self.attributes))  # fmt: skip


_FIELDS = tuple(f.name for f in fields(Episode))


def _evolve(ep: Episode, **changes: Any) -> Episode:
    """``dataclasses.replace`` without its per-call introspection (a third of the lifecycle's time in
    an alert storm, where every open episode changes every batch)."""
    return Episode(*[changes.get(name, getattr(ep, name)) for name in _FIELDS])


class AlertTracker:
    """Turns evaluation frames into transitions; thread-safe (two agents may share one)."""

    def __init__(
        self,
        policy: Policy,
        store: Mapping[str, bytes] | None = None,
        write: Callable[[str, bytes | None], None] | None = None,
    ) -> None:
        self._policy = policy
        self._store = store if store is not None else {}
        self._write = write
        self._mem: dict[str, Episode] = {}  # keys this tracker touched: their newest state
        self._dirty: dict[str, Episode | None] = {}
        self._lock = threading.Lock()

    def _get(self, key: str) -> Episode | None:
        ep = self._mem.get(key)
        if ep is None:  # not touched here: maybe opened before a restart or by another worker
            raw = self._store.get(key)
            ep = Episode.loads(raw) if raw else None
        return ep

    def _set(self, key: str, ep: Episode) -> None:
        was_open = (old := self._get(key)) is not None and bool(old.alert_id)
        self._mem[key] = ep
        if ep.alert_id:
            self._dirty[key] = ep
        elif was_open:
            self._dirty[key] = None

    def _open_keys(self) -> set[str]:
        stored = {k for k in self._store if k not in self._mem}
        return stored | {k for k, e in self._mem.items() if e.alert_id}

    @property
    def open_count(self) -> int:
        with self._lock:
            return len(self._open_keys())

    def open_subjects(self) -> dict[str, frozenset[str]]:
        """Rule -> the subjects with an open episode of it (for :attr:`Context.open`)."""
        with self._lock:
            out: dict[str, set[str]] = {}
            for ep in (self._get(k) for k in self._open_keys()):
                if ep is not None and ep.alert_id:
                    out.setdefault(ep.rule, set()).add(ep.subject_id)
            return {rule: frozenset(subjects) for rule, subjects in out.items()}

    def open_episodes(self) -> list[Episode]:
        with self._lock:
            eps = (self._get(k) for k in self._open_keys())
            return [e for e in eps if e is not None and e.alert_id]

    def apply(self, evals: pl.DataFrame, stream_ms: int) -> list[Transition]:
        """Apply one batch's evaluations (any order); ``stream_ms`` = newest event time seen."""
        with self._lock:
            out: list[Transition] = []
            if evals.height:
                for row in self._relevant(evals).sort(["_key", "ts_ms"]).iter_rows(named=True):
                    t = self._step(row)
                    if t is not None:
                        out.append(t)
            out.extend(self._expire_events(stream_ms))
            return out

    def _relevant(self, evals: pl.DataFrame) -> pl.DataFrame:
        """The rows of keys with a firing evaluation in this batch or an open episode (+ ``_key``);
        the rest are no-ops. Keys are built only for rows of those subjects: a batch holds an
        evaluation per reading and rule, almost all of them quiet, and a key per row cost tens of ms."""
        open_keys = self._open_keys()
        subjects = set(evals.filter(pl.col("firing")).get_column("subject_id").to_list())
        subjects.update(self._subject(k) for k in open_keys)
        if not subjects:
            return evals.clear().with_columns(pl.lit("").alias("_key"))
        cand = evals.filter(pl.col("subject_id").is_in(list(subjects))).with_columns(
            pl.concat_str(["tenant_id", "subject_id", "rule"], separator="|").alias("_key")
        )
        return cand.filter(pl.col("firing").any().over("_key") | pl.col("_key").is_in(list(open_keys)))

    def _subject(self, key: str) -> str:
        """The subject of an open episode's key (not parsed from it: ids may contain the "|" of keys)."""
        ep = self._get(key)
        return ep.subject_id if ep is not None else ""

    def _step(self, row: dict) -> Transition | None:
        key, ts = row["_key"], row["ts_ms"]
        ep = self._get(key)
        if ep is not None and ts <= ep.last_eval:
            return None
        params = self._policy.params(row["rule"], row["tenant_id"], row["site_id"])
        if not row["firing"]:
            if ep is None or not ep.alert_id:
                return None
            if RULES[row["rule"]].kind == "event" or ep.quiet + 1 < int(params["clear_after"]):
                self._set(key, _evolve(ep, last_eval=ts, quiet=ep.quiet + 1))
                return None
            self._set(key, Episode(last_eval=ts))
            return ep.transition(State.CLEARED)
        sev = int(row["severity"])
        fields = {"observed": row["observed"], "threshold": row["threshold"], "message": row["message"]}
        if ep is None or not ep.alert_id:
            new = Episode(ts, alert_id(key, ts), row["tenant_id"], row["site_id"], row["subject_id"],
                          row["subject_type"], row["rule"], sev, ts, ts, 1, 0, **fields)  # fmt: skip
            self._set(key, new)
            return new.transition(State.RAISED)
        grown = _evolve(ep, last_eval=ts, last_seen=ts, count=ep.count + 1, quiet=0, severity=sev,
                        **(fields if sev != ep.severity else {}))  # fmt: skip
        self._set(key, grown)
        return grown.transition(State.UPDATED) if sev != ep.severity else None

    def _expire_events(self, stream_ms: int) -> list[Transition]:
        out = []
        for key in self._open_keys():
            ep = self._get(key)
            if ep is None or not ep.alert_id or RULES[ep.rule].kind != "event":
                continue
            quiet_ms = int(self._policy.params(ep.rule, ep.tenant_id, ep.site_id)["quiet_period_s"]) * 1000
            if stream_ms - ep.last_seen >= quiet_ms:
                self._set(key, Episode(last_eval=max(ep.last_eval, ep.last_seen)))
                out.append(ep.transition(State.CLEARED))
        return out

    def annotate(self, key: str, attributes: Mapping[str, str]) -> Transition | None:
        """Add attributes to an open episode (e.g. a gap's cause); published as ``updated``."""
        with self._lock:
            ep = self._get(key)
            if ep is None or not ep.alert_id:
                return None
            merged = {**dict(ep.attributes), **attributes}
            if merged == dict(ep.attributes):
                return None
            new = _evolve(ep, attributes=tuple(sorted(merged.items())))
            self._set(key, new)
            return new.transition(State.UPDATED)

    def persist(self) -> int:
        """Write changed episodes through ``write`` (call on the event loop, after the batch is durable)."""
        with self._lock:
            dirty, self._dirty = self._dirty, {}
        if self._write is not None:
            for key, ep in dirty.items():
                self._write(key, ep.dumps() if ep is not None else None)
        return len(dirty)
