"""The decrypted data-notification: ``0F | long-invoke-id (4) | date-time | body``.

date-time: ``0C`` + 12 bytes, or as an octet string ``09 0C`` + 12 bytes
(``00`` or ``09 00`` = absent: the body's clock object 0-0:1.0.0 is used instead;
with neither the notification is refused).

The body is a structure (or array) read element by element, which covers both layouts:

* an element that is a structure whose first item is a 6-byte octet string is one
  nested entry ``{OBIS, value[, {scaler, unit}]}`` (Tirol/Kaifa);
* an element that is a bare 6-byte octet string is an OBIS code followed by its
  value and, when the next element is a ``{int8, enum}`` structure, its scaler and
  unit (EVN's flat list; Kaifa also starts its body with a bare clock pair);
* anything else, a structured value, a repeated OBIS code or a byte after the
  body fails the parse.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pipeline.dlms.axdr import (
    ENUM,
    INT8,
    INTEGER_TAGS,
    OCTET_STRING,
    STRUCTURE,
    Data,
    DateTime,
    Reader,
    parse_datetime,
)
from pipeline.envelope import Reason

DATA_NOTIFICATION = 0x0F
CLOCK, METER_NUMBER, DEVICE_NAME = "0-0:1.0.0", "0-0:96.1.0", "0-0:42.0.0"
# DLMS unit codes -> catalogue units (255 "no unit" = the catalogue's dimensionless "1";
# 44 Hz is the Blue Book code, added so that frequency maps onto the catalogue).
UNITS: dict[int, str] = {27: "W", 30: "Wh", 32: "varh", 33: "A", 35: "V", 44: "Hz", 255: "1"}


@dataclass(frozen=True, slots=True)
class ObisValue:
    obis: str  # "A-B:C.D.E", with "*F" appended when F is not 255
    value: float | str  # numbers: raw x 10^scaler; strings: ASCII text, else upper-case hex
    scaler: int = 0
    unit: int | None = None  # DLMS unit code; None without a {scaler, unit} pair


@dataclass(frozen=True, slots=True)
class Notification:
    invoke_id: int
    clock: DateTime  # the header's date-time, else the body's clock object
    values: tuple[ObisValue, ...]  # all entries except clock, meter number and device name
    meter_number: str | None
    logical_device_name: str | None


def obis_to_str(code: bytes) -> str:
    a, b, c, d, e, f = code
    return f"{a}-{b}:{c}.{d}.{e}" + ("" if f == 255 else f"*{f}")


def obis_from_str(text: str) -> bytes:
    head, _, f = text.partition("*")
    ab, _, cde = head.partition(":")
    a, b = ab.split("-")
    return bytes([int(a), int(b), *(int(x) for x in cde.split(".")), int(f or 255)])


def scale(raw: int, scaler: int) -> float:
    """raw x 10^scaler, correctly rounded (2308, -1 -> 230.8 exactly as written)."""
    return float(raw * 10**scaler) if scaler >= 0 else raw / 10**-scaler


def _text(raw: bytes | str | float) -> str:
    if isinstance(raw, float):  # a meter number sent as an integer
        return str(int(raw)) if raw.is_integer() else str(raw)
    if isinstance(raw, str):
        return raw
    return raw.decode("ascii") if all(0x20 <= b < 0x7F for b in raw) else raw.hex().upper()


def _is_scaler_unit(d: Data) -> bool:
    items = d.value
    return (
        d.tag == STRUCTURE
        and isinstance(items, tuple)
        and len(items) == 2
        and items[0].tag == INT8
        and items[1].tag == ENUM
    )


def _scaler_unit(su: Data | None) -> tuple[int, int | None]:
    if su is None or not isinstance(su.value, tuple):
        return 0, None
    scaler, unit = su.value[0].value, su.value[1].value
    assert isinstance(scaler, int) and isinstance(unit, int)
    return scaler, unit


def _is_obis(d: Data) -> bool:
    return d.tag == OCTET_STRING and isinstance(d.value, bytes) and len(d.value) == 6


def _entries(r: Reader, body: Data) -> list[tuple[bytes, Data, Data | None]]:
    if not isinstance(body.value, tuple):
        raise r.fail(f"notification body is not a structure or array (tag 0x{body.tag:02X})")
    items, i = body.value, 0
    out: list[tuple[bytes, Data, Data | None]] = []
    while i < len(items):
        item = items[i]
        sub = item.value
        if item.tag == STRUCTURE and isinstance(sub, tuple) and len(sub) in (2, 3) and _is_obis(sub[0]):
            if len(sub) == 3 and not _is_scaler_unit(sub[2]):
                raise r.fail(f"body element {i}: third item is not {{scaler, unit}}")
            out.append((bytes(sub[0].value), sub[1], sub[2] if len(sub) == 3 else None))
            i += 1
        elif _is_obis(item) and i + 1 < len(items):
            su = items[i + 2] if i + 2 < len(items) and _is_scaler_unit(items[i + 2]) else None
            out.append((bytes(item.value), items[i + 1], su))
            i += 3 if su else 2
        else:
            raise r.fail(f"body element {i} (tag 0x{item.tag:02X}) is neither an OBIS entry nor a code")
    return out


def parse_notification(plaintext: bytes, reason: Reason = Reason.DECRYPT_FAILED) -> Notification:
    """Parse the whole plaintext or raise ``DlmsError(reason)``."""
    r = Reader(plaintext, reason)
    if (tag := r.byte()) != DATA_NOTIFICATION:
        raise r.fail(f"APDU tag 0x{tag:02X} is not a data-notification (0F)")
    invoke_id = int.from_bytes(r.take(4), "big")
    form = r.byte()
    size = r.length() if form == OCTET_STRING else {0x0C: 12, 0x00: 0}.get(form, -1)
    if size not in (0, 12):
        raise r.fail(f"notification date-time form 0x{form:02X} / {size} bytes not supported")
    header = parse_datetime(r.take(12), reason) if size else None
    body = r.data()
    if r.remaining:
        raise r.fail(f"{r.remaining} bytes after the notification body")
    found: dict[str, ObisValue | DateTime] = {}
    for code, value, su in _entries(r, body):
        obis = obis_to_str(code)
        if obis in found:
            raise r.fail(f"OBIS {obis} appears twice")
        if obis == CLOCK and value.tag == OCTET_STRING and isinstance(value.value, bytes):
            found[obis] = parse_datetime(value.value, reason)
        elif value.tag in INTEGER_TAGS and isinstance(value.value, int):
            scaler, unit = _scaler_unit(su)
            found[obis] = ObisValue(obis, scale(value.value, scaler), scaler, unit)
        elif isinstance(value.value, bytes | str):
            found[obis] = ObisValue(obis, _text(value.value))
        else:
            raise r.fail(f"value of OBIS {obis} is a structure or array")
    clock = header or found.pop(CLOCK, None)
    found.pop(CLOCK, None)
    if not isinstance(clock, DateTime):
        raise r.fail("notification has no date-time")
    names = [found.pop(k, None) for k in (METER_NUMBER, DEVICE_NAME)]
    values = tuple(v for v in found.values() if isinstance(v, ObisValue))
    meter, device = (_text(n.value) if isinstance(n, ObisValue) else None for n in names)
    return Notification(invoke_id, clock, values, meter, device)


def to_measurements(
    values: tuple[ObisValue, ...], by_obis: Mapping[str, str], units: Mapping[str, str]
) -> tuple[dict[str, float], tuple[str, ...]]:
    """Split values into catalogue measurements and unmapped OBIS codes.

    A value maps when its OBIS code is in the catalogue, it is a number and its unit
    (if it has one) is the catalogue's unit for that code; otherwise it is unmapped.
    """
    measurements: dict[str, float] = {}
    unmapped: list[str] = []
    for v in values:
        code = by_obis.get(v.obis)
        unit_ok = v.unit is None or (code is not None and UNITS.get(v.unit) == units.get(code))
        if code is not None and isinstance(v.value, float) and unit_ok:
            measurements[code] = v.value
        else:
            unmapped.append(v.obis)
    return measurements, tuple(unmapped)
