"""Fuzzing the DLMS parsers with mutated frames: only DlmsError escapes, every message is accounted for."""

from __future__ import annotations

from functools import cache

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.catalogue import load_catalogue
from pipeline.dlms import (
    DlmsError,
    FrameDecoder,
    KeyStore,
    Layout,
    Push,
    Register,
    decrypt,
    encode_frames,
    encode_notification,
    parse_ciphered,
    parse_frames,
    parse_notification,
    segment_apdu,
)
from pipeline.envelope import RawMessage
from tests.support import shared_testdata

VECTOR = shared_testdata("dlms_kaifa_tinetz.json")
KEY = bytes.fromhex(VECTOR["key_hex"])
AK = bytes(range(0xD0, 0xE0))
TITLE = VECTOR["expected"]["system_title_hex"]
CATALOGUE = load_catalogue()
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@cache
def pool() -> tuple[bytes, ...]:
    """Valid messages, one APDU each: the vector and encoder output (both layouts, both modes, segmented)."""
    push = Push(
        ts_ms=1_700_000_000_000,
        meter_number="SIM0001",
        logical_device_name="SIMLDN0001",
        deviation_minutes=-60,
        registers=(
            Register.of("1-0:1.8.0", 123456, unit=30),
            Register.of("1-0:32.7.0", 231.4, scaler=-1, unit=35),
            Register("1-0:99.7.0", -5, -2, 27),
        ),
    )
    titles = {"flat": "53414701020304A1", "auth": "49534B0102030405", "unknown": "4B464D9999999999"}
    return (
        b"".join(bytes.fromhex(h) for h in VECTOR["frames_hex"]),
        b"".join(
            encode_frames(
                push, system_title=titles["flat"], frame_counter=5, key=KEY, layout=Layout.FLAT, max_payload=60
            )
        ),
        b"".join(
            encode_frames(push, system_title=titles["auth"], frame_counter=6, key=KEY, auth_key=AK, max_payload=100)
        ),
        b"".join(encode_frames(push, system_title=titles["unknown"], frame_counter=1, key=KEY)),
    )


def keys() -> KeyStore:
    store = KeyStore()
    for title in (TITLE, "53414701020304A1"):
        store.add(KEY, system_title=title)
    store.add(KEY, authentication_key=AK, system_title="49534B0102030405")
    return store


def assert_no_key(*texts: str) -> None:
    for text in texts:
        assert KEY.hex() not in text.lower() and AK.hex() not in text.lower()


@st.composite
def mutate(draw: st.DrawFn, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "set"]))
        pos = draw(st.integers(0, max(len(out) - 1, 0)))
        if op == "flip" and out:
            out[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del out[pos:]
        elif op == "insert":
            out[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del out[pos : pos + draw(st.integers(1, 16))]
        elif op == "set" and out:
            out[pos] = draw(st.integers(0, 255))
    return bytes(out)


def apdu_of(value: bytes) -> bytes:
    return b"".join(f.payload for f in parse_frames(value))


@st.composite
def mutated_message(draw: st.DrawFn, value: bytes) -> bytes:
    """Mutate the frame bytes, or mutate the APDU and frame it again (valid checksums, deeper layers)."""
    if draw(st.booleans()):
        return draw(mutate(value))
    frames = segment_apdu(draw(mutate(apdu_of(value))), max_payload=draw(st.integers(60, 250)))
    return b"".join(frames)


def plaintexts() -> list[bytes]:
    out = []
    for value in pool()[:3]:
        apdu = parse_ciphered(apdu_of(value))
        out.append(decrypt(apdu, KEY, AK if apdu.authenticated else None))
    push = Push(ts_ms=0, header_clock="octet_string", registers=(Register("1-0:1.8.0", 1, 0, 30),))
    return [*out, encode_notification(push, Layout.FLAT)]


@FUZZ
@given(data=st.data())
def test_low_level_parsers_raise_only_dlms_error(data: st.DataObject) -> None:
    value = data.draw(mutated_message(data.draw(st.sampled_from(pool()))))
    try:
        frames = parse_frames(value)
        apdu = parse_ciphered(b"".join(f.payload for f in frames))
        parse_notification(decrypt(apdu, KEY, AK))
    except DlmsError as exc:
        assert_no_key(str(exc), exc.detail)
    plain = data.draw(mutate(data.draw(st.sampled_from(plaintexts()))))
    try:
        parse_notification(plain)
    except DlmsError as exc:
        assert_no_key(str(exc), exc.detail)


@FUZZ
@given(
    choices=st.lists(st.tuples(st.integers(0, 3), st.booleans()), min_size=1, max_size=6),
    shared_key=st.booleans(),
    data=st.data(),
)
def test_every_mutated_message_ends_as_a_reading_or_a_rejection(
    choices: list[tuple[int, bool]], shared_key: bool, data: st.DataObject
) -> None:
    messages = []
    for i, (which, mutated) in enumerate(choices):
        value = pool()[which]
        if mutated:
            value = data.draw(mutated_message(value))
        key = b"gateway" if shared_key else f"meter-{i}".encode()
        messages.append(RawMessage("meter.frames", 0, i, key, value))
    dec = FrameDecoder(keys(), CATALOGUE, {}, max_wait_ms=1_000)
    readings, rejected = dec.decode(messages, now_ms=0)
    expired = dec.expire(now_ms=1_000)
    assert dec.pending == 0
    assert sum(r.message_count for r in readings) + len(rejected) + len(expired) == len(messages)
    if not shared_key:  # one message, one outcome
        assert all(r.message_count == 1 for r in readings)
        assert sorted([r.msg_idx for r in readings] + [j.original.offset for j in rejected + expired]) == list(
            range(len(messages))
        )
    for j in rejected + expired:
        assert j.original in messages
        assert_no_key(j.detail, *(v for _, v in j.extra))
