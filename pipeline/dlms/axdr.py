"""A-XDR: the typed values of a data-notification, their lengths, and COSEM date-time.

Only the types listed in ``domain/dlms.md`` are understood; any other tag, a
truncated value, a nesting deeper than :data:`MAX_DEPTH` or an impossible
date-time raises :class:`DlmsError` with the reason the caller chose (the
reader does not know whether the bytes came out of an authenticated frame).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from pipeline.dlms.errors import DlmsError
from pipeline.envelope import Reason

ARRAY, STRUCTURE, INT32, UINT32, OCTET_STRING, VISIBLE_STRING = 0x01, 0x02, 0x05, 0x06, 0x09, 0x0A
INT8, INT16, UINT8, UINT16, INT64, UINT64, ENUM = 0x0F, 0x10, 0x11, 0x12, 0x14, 0x15, 0x16

INTEGER_TAGS: dict[int, tuple[int, bool]] = {  # tag -> (size in bytes, signed)
    INT8: (1, True),
    INT16: (2, True),
    INT32: (4, True),
    INT64: (8, True),
    UINT8: (1, False),
    UINT16: (2, False),
    UINT32: (4, False),
    UINT64: (8, False),
    ENUM: (1, False),
}
MAX_DEPTH = 8
DEVIATION_UNSPECIFIED = -0x8000  # 0x8000 read as int16
CLOCK_STATUS_UNSPECIFIED = 0xFF


@dataclass(frozen=True, slots=True)
class Data:
    """One A-XDR value: ``value`` is an int, bytes (octet string), str (visible string) or a tuple."""

    tag: int
    value: int | bytes | str | tuple[Data, ...]


class Reader:
    """Cursor over a byte string; every failure raises ``DlmsError(reason, ...)``."""

    def __init__(self, buf: bytes, reason: Reason = Reason.DECRYPT_FAILED) -> None:
        self.buf, self.pos, self.reason = buf, 0, reason

    def fail(self, detail: str) -> DlmsError:
        return DlmsError(self.reason, detail)

    @property
    def remaining(self) -> int:
        return len(self.buf) - self.pos

    def take(self, n: int) -> bytes:
        if n > self.remaining:
            raise self.fail(f"truncated at byte {self.pos}: need {n}, have {self.remaining}")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def byte(self) -> int:
        return self.take(1)[0]

    def length(self) -> int:
        """BER-style length: ``< 0x80`` one byte, ``0x81 nn``, ``0x82 nnnn``."""
        first = self.byte()
        if first < 0x80:
            return first
        if first in (0x81, 0x82):
            return int.from_bytes(self.take(first - 0x80), "big")
        raise self.fail(f"unsupported length form 0x{first:02X} at byte {self.pos - 1}")

    def data(self, depth: int = 0) -> Data:
        if depth > MAX_DEPTH:
            raise self.fail(f"A-XDR nesting deeper than {MAX_DEPTH}")
        tag = self.byte()
        if tag in (ARRAY, STRUCTURE):
            count = self.length()
            return Data(tag, tuple(self.data(depth + 1) for _ in range(count)))
        if tag in INTEGER_TAGS:
            size, signed = INTEGER_TAGS[tag]
            return Data(tag, int.from_bytes(self.take(size), "big", signed=signed))
        if tag == OCTET_STRING:
            return Data(tag, self.take(self.length()))
        if tag == VISIBLE_STRING:
            return Data(tag, self.take(self.length()).decode("latin-1"))
        raise self.fail(f"unsupported A-XDR tag 0x{tag:02X} at byte {self.pos - 1}")


def encode_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    if n <= 0xFF:
        return bytes([0x81, n])
    if n <= 0xFFFF:
        return b"\x82" + n.to_bytes(2, "big")
    raise ValueError(f"length {n} does not fit the 0x82 form")


def encode_data(d: Data) -> bytes:
    """Inverse of :meth:`Reader.data` (used by the encoder)."""
    v = d.value
    if d.tag in (ARRAY, STRUCTURE):
        assert isinstance(v, tuple)
        return bytes([d.tag]) + encode_length(len(v)) + b"".join(encode_data(x) for x in v)
    if d.tag in INTEGER_TAGS:
        assert isinstance(v, int)
        size, signed = INTEGER_TAGS[d.tag]
        return bytes([d.tag]) + v.to_bytes(size, "big", signed=signed)
    if d.tag in (OCTET_STRING, VISIBLE_STRING):
        raw = v.encode("latin-1") if isinstance(v, str) else v
        assert isinstance(raw, bytes)
        return bytes([d.tag]) + encode_length(len(raw)) + raw
    raise ValueError(f"cannot encode A-XDR tag 0x{d.tag:02X}")


@dataclass(frozen=True, slots=True)
class DateTime:
    """A COSEM date-time. ``local`` carries the meter's offset (UTC when the deviation is unspecified)."""

    local: datetime
    deviation_minutes: int | None  # None: 0x8000, not specified -> local time taken as UTC
    clock_status: int

    @property
    def utc(self) -> datetime:
        return self.local.astimezone(UTC)

    @property
    def ts_ms(self) -> int:
        return (self.local - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def parse_datetime(raw: bytes, reason: Reason = Reason.DECRYPT_FAILED) -> DateTime:
    """12 bytes: year(2) month day weekday hour minute second hundredths deviation(int16) status.

    UTC = local + deviation (minutes). Hundredths 0xFF = not specified (taken as 0);
    the weekday is not checked. Any other unspecified or impossible field fails.
    """
    if len(raw) != 12:
        raise DlmsError(reason, f"date-time has {len(raw)} bytes, not 12")
    year = int.from_bytes(raw[0:2], "big")
    month, day, _weekday, hour, minute, second, hundredths = raw[2:9]
    deviation = int.from_bytes(raw[9:11], "big", signed=True)
    if hundredths == 0xFF:
        hundredths = 0
    if not 1970 <= year <= 9998 or hundredths > 99:
        raise DlmsError(reason, f"date-time year {year} / hundredths {hundredths} not usable")
    if deviation == DEVIATION_UNSPECIFIED:
        dev: int | None = None
        tz = UTC
    elif -840 <= deviation <= 840:
        dev, tz = deviation, timezone(timedelta(minutes=-deviation))
    else:
        raise DlmsError(reason, f"date-time deviation {deviation} min out of range")
    try:
        local = datetime(year, month, day, hour, minute, second, hundredths * 10_000, tzinfo=tz)
    except ValueError:
        raise DlmsError(reason, "date-time field out of range (unspecified or impossible)") from None
    return DateTime(local=local, deviation_minutes=dev, clock_status=raw[11])


def encode_datetime(ts_ms: int, deviation_minutes: int | None = 0, clock_status: int = 0) -> bytes:
    """Inverse of :func:`parse_datetime`; ``ts_ms`` is truncated to hundredths of a second."""
    offset = timedelta(minutes=-(deviation_minutes or 0))
    local = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ts_ms) + offset
    dev = 0x8000 if deviation_minutes is None else deviation_minutes & 0xFFFF
    return (
        local.year.to_bytes(2, "big")
        + bytes([local.month, local.day, local.isoweekday(), local.hour, local.minute, local.second])
        + bytes([local.microsecond // 10_000])
        + dev.to_bytes(2, "big")
        + bytes([clock_status])
    )
