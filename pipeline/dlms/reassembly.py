"""Reassembly of APDUs split over several M-Bus frames, keyed by the Kafka message key.

The frames of one APDU may arrive concatenated in one message or in consecutive
messages with the same key. Rules (segment numbering: see :mod:`pipeline.dlms.mbus`):

* A message is checked as a whole before it touches any state: its frames must
  continue the pending APDU of its key (next segment number) or start a new one
  (segment 0) and then follow 0, 1, 2, ... up to a frame marked last. A message
  that breaks the sequence is refused as a whole (``incomplete_frame``) and the
  pending APDU of its key is left as it was.
* A message whose first frame is segment 0 while an APDU is pending for its key
  supersedes it: the pending APDU is dropped (``incomplete_frame``).
* A pending APDU waits at most ``max_wait_ms`` from its first segment; after that
  :meth:`Reassembler.expire` drops it, and so does the next message of its key
  that starts a new APDU (a late continuation is refused as an orphan instead).

Messages without a key share one bucket (``None``). State lives in memory only:
a partial APDU is lost on restart unless the worker did not yet commit the
offsets of its messages. ``source`` tokens are opaque to this module; the facade
passes the message plus the frames it contributed, so every drop names its messages.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from pipeline.dlms.errors import DlmsError
from pipeline.dlms.mbus import MAX_SEGMENTS, Frame
from pipeline.envelope import Reason

T = TypeVar("T")
Key = bytes | None


@dataclass(frozen=True, slots=True)
class Assembled(Generic[T]):
    key: Key
    apdu: bytes
    sources: tuple[T, ...]


@dataclass(frozen=True, slots=True)
class Dropped(Generic[T]):
    key: Key
    sources: tuple[T, ...]
    detail: str


@dataclass(slots=True)
class _Partial(Generic[T]):
    started_ms: int
    next_segment: int = 0
    chunks: list[bytes] = field(default_factory=list)
    sources: list[T] = field(default_factory=list)


def check_sequence(frames: Sequence[Frame], expected: int | None) -> None:
    """Raise ``incomplete_frame`` unless ``frames`` continue ``expected`` (None: nothing pending)."""
    for idx, frame in enumerate(frames):
        if frame.segment == 0 and (idx == 0 or expected is None):
            expected = 0  # a new APDU (at idx 0 it supersedes a pending one)
        if expected is None:
            raise DlmsError(Reason.INCOMPLETE_FRAME, f"segment {frame.segment} without a first segment")
        if frame.segment != expected:
            raise DlmsError(Reason.INCOMPLETE_FRAME, f"segment {frame.segment} where segment {expected} was expected")
        if frame.last:
            expected = None
        elif frame.segment + 1 >= MAX_SEGMENTS:
            raise DlmsError(Reason.INCOMPLETE_FRAME, f"segment {frame.segment} is not marked last")
        else:
            expected = frame.segment + 1


class Reassembler(Generic[T]):
    def __init__(self, *, max_wait_ms: int = 30_000) -> None:
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must be >= 0")
        self.max_wait_ms = max_wait_ms
        self._pending: dict[Key, _Partial[T]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def feed(
        self,
        key: Key,
        frames: Sequence[Frame],
        now_ms: int,
        make_source: Callable[[tuple[Frame, ...]], T],
    ) -> tuple[list[Assembled[T]], list[Dropped[T]]]:
        """Add one message's frames. Raises :class:`DlmsError` (state untouched) if they do not fit."""
        dropped: list[Dropped[T]] = []
        partial = self._pending.get(key)
        stale = partial is not None and now_ms - partial.started_ms >= self.max_wait_ms
        if not frames:
            return [], dropped
        check_sequence(frames, partial.next_segment if partial is not None and not stale else None)
        if partial is not None:
            if stale:
                dropped.append(self._drop(key, f"timed out after {now_ms - partial.started_ms} ms"))
                partial = None
            elif frames[0].segment == 0:
                dropped.append(self._drop(key, "superseded by a new first segment"))
                partial = None
        assembled: list[Assembled[T]] = []
        mine: list[Frame] = []
        for frame in frames:
            if frame.segment == 0:
                partial = _Partial(started_ms=now_ms)
            assert partial is not None  # guaranteed by check_sequence
            partial.chunks.append(frame.payload)
            partial.next_segment = frame.segment + 1
            mine.append(frame)
            if frame.last:
                partial.sources.append(make_source(tuple(mine)))
                assembled.append(Assembled(key, b"".join(partial.chunks), tuple(partial.sources)))
                partial, mine = None, []
        if partial is not None:
            partial.sources.append(make_source(tuple(mine)))
            self._pending[key] = partial
        else:
            self._pending.pop(key, None)
        return assembled, dropped

    def expire(self, now_ms: int) -> list[Dropped[T]]:
        """Drop every pending APDU whose first segment is ``max_wait_ms`` or more old."""
        old = [k for k, p in self._pending.items() if now_ms - p.started_ms >= self.max_wait_ms]
        return [self._drop(k, f"timed out after {now_ms - self._pending[k].started_ms} ms") for k in old]

    def _drop(self, key: Key, why: str) -> Dropped[T]:
        partial = self._pending.pop(key)
        detail = f"APDU incomplete: {why}; got segments 0-{partial.next_segment - 1}"
        return Dropped(key, tuple(partial.sources), detail)
