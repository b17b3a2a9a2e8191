"""Wired M-Bus long frames: ``68 L L 68 | C A CI STSAP DTSAP | payload | CS 16``.

Segment numbering (confirmed on the TINETZ/Kaifa vector, CI ``0x00`` then
``0x11``): the low nibble of CI is the segment number (0, 1, 2, ... up to 15)
and bit 4 (``0x10``) marks the last segment. An APDU that fits one frame is sent
as CI ``0x10``. CI values with any of bits 5-7 set are not DLMS segments
(``unsupported_apdu``).

Failure reasons: too few bytes for the frame the header announces ->
``incomplete_frame``; wrong start byte, unequal length bytes, a length below 5,
a wrong checksum, a wrong stop byte or bytes between frames -> ``bad_checksum``
(the frame's integrity check failed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.dlms.errors import DlmsError
from pipeline.envelope import Reason

START, STOP = 0x68, 0x16
HEADER_LEN = 5  # C A CI STSAP DTSAP
MAX_PAYLOAD = 255 - HEADER_LEN  # L is one byte
MAX_SEGMENTS = 16
LAST_SEGMENT = 0x10
DEFAULT_CONTROL, DEFAULT_ADDRESS, DEFAULT_STSAP, DEFAULT_DTSAP = 0x53, 0xFF, 0x01, 0x67


@dataclass(frozen=True, slots=True)
class Frame:
    """One checked long frame. ``raw`` is the frame's bytes from ``68`` to ``16``."""

    control: int
    address: int
    ci: int
    stsap: int
    dtsap: int
    payload: bytes
    raw: bytes = field(repr=False)

    @property
    def segment(self) -> int:
        return self.ci & 0x0F

    @property
    def last(self) -> bool:
        return bool(self.ci & LAST_SEGMENT)


def parse_frame(data: bytes, pos: int = 0) -> tuple[Frame, int]:
    """Parse the long frame starting at ``pos``; return it and the position after it."""
    avail = len(data) - pos
    if avail < 4:
        raise DlmsError(Reason.INCOMPLETE_FRAME, f"{avail} bytes at offset {pos}, a frame header needs 4")
    start, l1, l2, start2 = data[pos : pos + 4]
    if start != START or start2 != START:
        raise DlmsError(Reason.BAD_CHECKSUM, f"no long-frame start (68 L L 68) at offset {pos}")
    if l1 != l2:
        raise DlmsError(Reason.BAD_CHECKSUM, f"length bytes differ (0x{l1:02X} / 0x{l2:02X}) at offset {pos}")
    if l1 < HEADER_LEN:
        raise DlmsError(Reason.BAD_CHECKSUM, f"length {l1} below the 5 header bytes at offset {pos}")
    end = pos + 4 + l1 + 2
    if end > len(data):
        raise DlmsError(Reason.INCOMPLETE_FRAME, f"frame at offset {pos} needs {l1 + 6} bytes, has {avail}")
    body = data[pos + 4 : pos + 4 + l1]
    checksum, stop = data[end - 2], data[end - 1]
    if sum(body) & 0xFF != checksum:
        raise DlmsError(Reason.BAD_CHECKSUM, f"checksum mismatch in frame at offset {pos}")
    if stop != STOP:
        raise DlmsError(Reason.BAD_CHECKSUM, f"stop byte 0x{stop:02X} instead of 16 at offset {pos}")
    control, address, ci, stsap, dtsap = body[:HEADER_LEN]
    if ci & 0xE0:
        raise DlmsError(Reason.UNSUPPORTED_APDU, f"CI 0x{ci:02X} at offset {pos} is not a DLMS segment")
    frame = Frame(control, address, ci, stsap, dtsap, bytes(body[HEADER_LEN:]), bytes(data[pos:end]))
    return frame, end


def parse_frames(data: bytes) -> tuple[Frame, ...]:
    """All the frames of one Kafka message value (one or several, concatenated, nothing between)."""
    if not data:
        raise DlmsError(Reason.INCOMPLETE_FRAME, "no bytes")
    frames: list[Frame] = []
    pos = 0
    while pos < len(data):
        frame, pos = parse_frame(data, pos)
        frames.append(frame)
    return tuple(frames)


def build_frame(
    payload: bytes,
    *,
    ci: int,
    control: int = DEFAULT_CONTROL,
    address: int = DEFAULT_ADDRESS,
    stsap: int = DEFAULT_STSAP,
    dtsap: int = DEFAULT_DTSAP,
) -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    body = bytes([control, address, ci, stsap, dtsap]) + payload
    return bytes([START, len(body), len(body), START]) + body + bytes([sum(body) & 0xFF, STOP])


def segment_apdu(apdu: bytes, *, max_payload: int = 245, **header: int) -> list[bytes]:
    """Split ``apdu`` into frames of at most ``max_payload`` APDU bytes (CI numbering as above)."""
    if not 1 <= max_payload <= MAX_PAYLOAD:
        raise ValueError(f"max_payload must be 1..{MAX_PAYLOAD}")
    chunks = [apdu[i : i + max_payload] for i in range(0, len(apdu), max_payload)] or [b""]
    if len(chunks) > MAX_SEGMENTS:
        raise ValueError(f"{len(apdu)} bytes need {len(chunks)} segments, at most {MAX_SEGMENTS} exist")
    last = len(chunks) - 1
    return [build_frame(chunk, ci=n | (LAST_SEGMENT if n == last else 0), **header) for n, chunk in enumerate(chunks)]
