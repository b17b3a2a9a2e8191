"""Build encrypted M-Bus frames from readings (the inverse of the decoder).

Used by the round-trip tests and by the simulator. Both body layouts
(:class:`Layout`), both security modes (no ``auth_key``: encryption only, SC 0x20;
with ``auth_key``: authenticated and encrypted, SC 0x30), three header date-time
forms, and segmentation into frames of at most ``max_payload`` APDU bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pipeline.dlms.apdu import encrypt
from pipeline.dlms.axdr import (
    ENUM,
    INT8,
    INT32,
    INT64,
    INTEGER_TAGS,
    OCTET_STRING,
    STRUCTURE,
    UINT32,
    UINT64,
    Data,
    encode_data,
    encode_datetime,
)
from pipeline.dlms.mbus import segment_apdu
from pipeline.dlms.notification import CLOCK, DATA_NOTIFICATION, DEVICE_NAME, METER_NUMBER, obis_from_str


class Layout(StrEnum):
    NESTED = "nested"  # Tirol/Kaifa: {OBIS, value, {scaler, unit}} structures
    FLAT = "flat"  # EVN: one structure of OBIS, value, {scaler, unit} triples


@dataclass(frozen=True, slots=True)
class Register:
    obis: str  # "1-0:1.8.0"
    raw: int
    scaler: int = 0
    unit: int = 255  # DLMS unit code: 27 W, 30 Wh, 32 varh, 33 A, 35 V, 255 none
    tag: int | None = None  # A-XDR integer type; None: uint32/uint64/int32/int64 by value

    @classmethod
    def of(cls, obis: str, value: float, *, scaler: int = 0, unit: int = 255, tag: int | None = None) -> Register:
        """A register holding ``value`` at resolution 10^scaler (e.g. 230.8 V, scaler -1 -> raw 2308)."""
        raw = round(value / 10**scaler) if scaler >= 0 else round(value * 10**-scaler)
        return cls(obis, raw, scaler, unit, tag)

    def data_tag(self) -> int:
        if self.tag is not None:
            return self.tag
        if self.raw >= 0:
            return UINT32 if self.raw < 2**32 else UINT64
        return INT32 if self.raw >= -(2**31) else INT64

    def value_data(self) -> Data:
        tag = self.data_tag()
        if tag not in INTEGER_TAGS:
            raise ValueError(f"register {self.obis}: tag 0x{tag:02X} is not an integer type")
        return Data(tag, self.raw)


@dataclass(frozen=True, slots=True)
class Push:
    """One data-notification as a meter would push it."""

    ts_ms: int  # UTC epoch ms (sent to 1/100 s)
    registers: tuple[Register, ...] = ()
    meter_number: str | None = None
    logical_device_name: str | None = None
    deviation_minutes: int | None = 0  # local = UTC - deviation; None -> 0x8000 (unspecified)
    clock_status: int = 0
    invoke_id: int = 0
    header_clock: str = "bare"  # "bare" (0C + 12), "octet_string" (09 0C + 12) or "absent" (00)
    clock_in_body: bool = True  # also send the clock object 0-0:1.0.0 as the first body entry


def _octets(value: bytes | str) -> Data:
    return Data(OCTET_STRING, value.encode("ascii") if isinstance(value, str) else value)


def encode_notification(push: Push, layout: Layout = Layout.NESTED) -> bytes:
    """The plaintext data-notification ``0F ...``."""
    if push.header_clock == "absent" and not push.clock_in_body:
        raise ValueError("a push needs a date-time in the header or in the body")
    dt = encode_datetime(push.ts_ms, push.deviation_minutes, push.clock_status)
    header = {"bare": b"\x0c" + dt, "octet_string": b"\x09\x0c" + dt, "absent": b"\x00"}[push.header_clock]
    entries: list[tuple[str, Data, Data | None]] = []
    if push.clock_in_body:
        entries.append((CLOCK, _octets(dt), None))
    for obis, name in ((METER_NUMBER, push.meter_number), (DEVICE_NAME, push.logical_device_name)):
        if name is not None:
            entries.append((obis, _octets(name), None))
    for reg in push.registers:
        su = Data(STRUCTURE, (Data(INT8, reg.scaler), Data(ENUM, reg.unit)))
        entries.append((reg.obis, reg.value_data(), su))
    items: list[Data] = []
    for n, (obis, value, su) in enumerate(entries):
        code = _octets(obis_from_str(obis))
        if layout is Layout.FLAT or (n == 0 and obis == CLOCK):  # Kaifa: a bare clock pair first
            items.extend([code, value] + ([su] if su else []))
        else:
            items.append(Data(STRUCTURE, (code, value) + ((su,) if su else ())))
    body = encode_data(Data(STRUCTURE, tuple(items)))
    return bytes([DATA_NOTIFICATION]) + push.invoke_id.to_bytes(4, "big") + header + body


def encode_frames(
    push: Push,
    *,
    system_title: bytes | str,
    frame_counter: int,
    key: bytes,
    auth_key: bytes | None = None,
    layout: Layout = Layout.NESTED,
    max_payload: int = 245,
    security_control: int | None = None,
) -> list[bytes]:
    """Encrypt ``push`` and cut it into M-Bus long frames (at most 16 segments)."""
    title = bytes.fromhex(system_title) if isinstance(system_title, str) else system_title
    apdu = encrypt(
        encode_notification(push, layout),
        system_title=title,
        frame_counter=frame_counter,
        key=key,
        auth_key=auth_key,
        security_control=security_control,
    )
    return segment_apdu(apdu, max_payload=max_payload)
