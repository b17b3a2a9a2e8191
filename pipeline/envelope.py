"""Envelopes that travel between stages: raw Kafka messages and rejections.

Stages return accepted records plus :class:`Rejected` records; rejections are
data, not exceptions, and end on the dead-letter topic with their reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Reason(StrEnum):
    """Dead-letter reason codes. The value is what goes into the ``dl.reason`` header."""

    # message level (decode)
    UNDECODABLE = "undecodable"
    UNKNOWN_SCHEMA = "unknown_schema"
    SCHEMA_MISMATCH = "schema_mismatch"
    OVERSIZE = "oversize"
    EMPTY = "empty_message"
    # record / channel level (validate)
    UNKNOWN_QUANTITY = "unknown_quantity"
    NON_FINITE = "non_finite"
    OUT_OF_RANGE = "out_of_range"
    FUTURE_TIMESTAMP = "future_timestamp"
    TOO_LATE = "too_late"
    CONFLICTING_DUPLICATE = "conflicting_duplicate"
    INVALID_IDENTIFIER = "invalid_identifier"
    INVALID_PERIOD = "invalid_period"
    NEGATIVE_COUNTER = "negative_counter"
    # tenancy
    UNKNOWN_DEVICE = "unknown_device"
    # encrypted frames (meter.frames)
    BAD_CHECKSUM = "bad_checksum"
    INCOMPLETE_FRAME = "incomplete_frame"
    UNKNOWN_KEY = "unknown_key"
    DECRYPT_FAILED = "decrypt_failed"
    AUTH_FAILED = "auth_failed"
    REPLAYED_FRAME = "replayed_frame"
    UNSUPPORTED_APDU = "unsupported_apdu"
    # the pipeline itself (a bug or a permanent storage refusal): the message is kept for replay
    INTERNAL_ERROR = "internal_error"
    SINK_REJECTED = "sink_rejected"


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One Kafka message as consumed, before any decoding."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int = 0


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that a stage refused, with the reason and where it came from.

    ``original`` is the message the record came from. ``record_index`` is the
    position of the reading inside a gateway batch (``-1`` for the whole
    message). ``payload`` optionally replaces the original bytes on the
    dead-letter topic when only part of a message was rejected (one reading
    of a 500-reading batch is re-encoded alone so that replaying it re-processes
    exactly that reading).
    """

    reason: Reason
    detail: str
    original: RawMessage
    record_index: int = -1
    payload: bytes | None = None
    tenant_id: str = ""
    extra: tuple[tuple[str, str], ...] = field(default=())
