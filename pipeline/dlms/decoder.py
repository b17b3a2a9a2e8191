"""The facade: Kafka messages of ``meter.frames`` in, decoded readings and rejections out.

Per message: frames are parsed and checked (``bad_checksum`` / ``incomplete_frame``),
fed to the reassembler under the message key, and every completed APDU is
deciphered (``unsupported_apdu``, ``unknown_key``, ``replayed_frame``,
``decrypt_failed``, ``auth_failed``), parsed and mapped onto the catalogue.
Failures come back as :class:`Rejected` records carrying the original message,
never as exceptions (only errors of the key store or of the replay state
mapping themselves propagate). A rejection that concerns an APDU spread over
several messages yields one :class:`Rejected` per message; ``payload`` then
holds just the frames that message contributed, when they are not its whole value.

Accounting: every message ends in exactly one place per APDU it carries -- a
reading (``message_count`` messages formed it), a rejection, or pending until a
later message completes it or :meth:`FrameDecoder.expire` drops it.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field, replace

from pipeline.catalogue import Catalogue
from pipeline.dlms.apdu import CipheredApdu, decrypt, parse_ciphered
from pipeline.dlms.errors import DlmsError
from pipeline.dlms.keys import KeyEntry, KeyStore
from pipeline.dlms.mbus import Frame, parse_frames
from pipeline.dlms.notification import parse_notification, to_measurements
from pipeline.dlms.reassembly import Assembled, Reassembler
from pipeline.dlms.replay import ReplayGuard
from pipeline.envelope import RawMessage, Reason, Rejected
from pipeline.flags import Flag

Extra = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class DecodedReading:
    device_id: str  # the meter number (0-0:96.1.0) when sent, else the system title hex
    system_title: str  # upper-case hex
    ts_ms: int  # UTC epoch ms (local time + deviation)
    measurements: dict[str, float]  # catalogue code -> value (raw x 10^scaler)
    flags: int  # Flag.CLOCK_INVALID / CLOCK_DOUBTFUL from clock status bits 0/1
    frame_counter: int
    meter_number: str | None
    logical_device_name: str | None
    msg_idx: int  # index in the decoded batch of the message that completed the APDU
    unmapped: tuple[str, ...] = ()  # OBIS codes not in the catalogue (or non-numeric / unit mismatch)
    security_control: int = 0
    clock_status: int = 0
    deviation_minutes: int | None = 0  # None: 0x8000 "not specified", local time was taken as UTC
    invoke_id: int = 0
    message_count: int = 1  # messages whose frames formed this APDU
    # (message, the frames it contributed) for each of them, in order: what a dead letter must carry
    sources: tuple[tuple[RawMessage, bytes], ...] = field(default=(), compare=False, repr=False)

    @property
    def utc_assumed(self) -> bool:
        return self.deviation_minutes is None


@dataclass(frozen=True, slots=True)
class _Part:
    message: RawMessage
    raw: bytes  # the frames this message contributed to one APDU


def clock_flags(status: int) -> int:
    """Clock status bits 0/1 -> flags; 0xFF means "not specified" and sets none."""
    if status == 0xFF:
        return 0
    return (Flag.CLOCK_INVALID if status & 1 else 0) | (Flag.CLOCK_DOUBTFUL if status & 2 else 0)


class FrameDecoder:
    def __init__(
        self,
        keys: KeyStore,
        catalogue: Catalogue,
        replay_state: MutableMapping[str, int],
        *,
        max_wait_ms: int = 30_000,
    ) -> None:
        self.keys = keys
        self.guard = ReplayGuard(replay_state)
        self._by_obis = catalogue.by_obis()
        self._units = {code: q.unit for code, q in catalogue.quantities.items()}
        self._reassembler: Reassembler[_Part] = Reassembler(max_wait_ms=max_wait_ms)
        self._learned: dict[str, str] = {}  # system title -> meter number of a meter-number-only key

    @property
    def pending(self) -> int:
        """Message keys with a partial APDU waiting for segments."""
        return len(self._reassembler)

    def decode(self, messages: Sequence[RawMessage], now_ms: int) -> tuple[list[DecodedReading], list[Rejected]]:
        readings: list[DecodedReading] = []
        rejected: list[Rejected] = []
        for idx, msg in enumerate(messages):
            if not msg.value:
                rejected.append(Rejected(Reason.EMPTY, "message has no value", msg))
                continue
            try:
                frames = parse_frames(msg.value)
                done, dropped = self._reassembler.feed(msg.key, frames, now_ms, lambda fs, m=msg: _part(m, fs))
            except DlmsError as exc:
                rejected.append(Rejected(exc.reason, exc.detail, msg))
                continue
            for d in dropped:
                rejected.extend(_reject(Reason.INCOMPLETE_FRAME, d.detail, p) for p in d.sources)
            for unit in done:
                reading, failures = self._decode_unit(unit, idx)
                rejected.extend(failures)
                if reading is not None:
                    readings.append(reading)
        return readings, rejected

    def expire(self, now_ms: int) -> list[Rejected]:
        """Partial APDUs that waited ``max_wait_ms`` or longer, as ``incomplete_frame`` rejections."""
        return [
            _reject(Reason.INCOMPLETE_FRAME, d.detail, p) for d in self._reassembler.expire(now_ms) for p in d.sources
        ]

    def _decode_unit(self, unit: Assembled[_Part], idx: int) -> tuple[DecodedReading | None, list[Rejected]]:
        extra: Extra = ()
        try:
            apdu = parse_ciphered(unit.apdu)
            extra = (("system_title", apdu.system_title_hex), ("frame_counter", str(apdu.frame_counter)))
            reading = self._read(apdu, idx, len(unit.sources))
            return replace(reading, sources=tuple((p.message, p.raw) for p in unit.sources)), []
        except DlmsError as exc:
            return None, [_reject(exc.reason, exc.detail, p, extra) for p in unit.sources]

    def _candidates(self, title: str) -> tuple[list[KeyEntry], bool]:
        """Entries to try and whether they are bound to this system title."""
        if (entry := self.keys.by_system_title(title)) is not None:
            return [entry], True
        meter = self._learned.get(title)
        if meter is not None and (entry := self.keys.by_meter_number(meter)) is not None:
            return [entry], True
        return list(self.keys.unbound()), False

    def _read(self, apdu: CipheredApdu, idx: int, message_count: int) -> DecodedReading:
        title = apdu.system_title_hex
        candidates, bound = self._candidates(title)
        if not candidates:
            raise DlmsError(Reason.UNKNOWN_KEY, f"no key for system title {title}")
        self.guard.check(title, apdu.frame_counter)
        content_reason = Reason.UNSUPPORTED_APDU if apdu.authenticated else Reason.DECRYPT_FAILED
        first_error: DlmsError | None = None
        for entry in candidates:
            try:
                plain = decrypt(apdu, entry.encryption_key, entry.authentication_key)
                note = parse_notification(plain, content_reason)
                if entry.system_title is None and note.meter_number != entry.meter_number:
                    raise DlmsError(
                        Reason.UNKNOWN_KEY,
                        f"frame of system title {title} is not from the meter number its key entry names",
                    )
            except DlmsError as exc:
                first_error = first_error or exc
                continue
            if entry.system_title is None and entry.meter_number:
                self._learned[title] = entry.meter_number
            measurements, unmapped = to_measurements(note.values, self._by_obis, self._units)
            reading = DecodedReading(
                device_id=note.meter_number or title,
                system_title=title,
                ts_ms=note.clock.ts_ms,
                measurements=measurements,
                flags=int(clock_flags(note.clock.clock_status)),
                frame_counter=apdu.frame_counter,
                meter_number=note.meter_number,
                logical_device_name=note.logical_device_name,
                msg_idx=idx,
                unmapped=unmapped,
                security_control=apdu.security_control,
                clock_status=note.clock.clock_status,
                deviation_minutes=note.clock.deviation_minutes,
                invoke_id=note.invoke_id,
                message_count=message_count,
            )
            self.guard.accept(title, apdu.frame_counter)
            return reading
        assert first_error is not None
        if bound:
            raise first_error
        raise DlmsError(Reason.UNKNOWN_KEY, f"none of {len(candidates)} meter-number keys fits system title {title}")


def _part(message: RawMessage, frames: tuple[Frame, ...]) -> _Part:
    return _Part(message, b"".join(f.raw for f in frames))


def _reject(reason: Reason, detail: str, part: _Part, extra: Extra = ()) -> Rejected:
    payload = None if part.raw == part.message.value else part.raw
    return Rejected(reason, detail, part.message, payload=payload, extra=extra)
