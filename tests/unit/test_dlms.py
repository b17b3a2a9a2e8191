"""DLMS/COSEM over M-Bus: the TINETZ/Kaifa vector, the encoder round trip, failures and keys."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.catalogue import load_catalogue
from pipeline.dlms import (
    DlmsError,
    FrameDecoder,
    KeyStore,
    Layout,
    Push,
    Reassembler,
    Register,
    decrypt,
    encode_frames,
    parse_ciphered,
    parse_frames,
    parse_notification,
    segment_apdu,
)
from pipeline.dlms.axdr import INTEGER_TAGS, UINT16, UINT32
from pipeline.dlms.notification import UNITS, scale
from pipeline.envelope import RawMessage, Reason, Rejected
from pipeline.errors import ConfigError
from pipeline.flags import Flag
from tests.support import shared_testdata

VECTOR = shared_testdata("dlms_kaifa_tinetz.json")
KEY = bytes.fromhex(VECTOR["key_hex"])
FRAMES = [bytes.fromhex(h) for h in VECTOR["frames_hex"]]
TITLE = VECTOR["expected"]["system_title_hex"]
CATALOGUE = load_catalogue()
BY_OBIS = CATALOGUE.by_obis()
AK = bytes(range(0xD0, 0xE0))
OTHER_KEY = bytes(range(0x40, 0x50))
KEY_STRINGS = [k.hex().upper() for k in (KEY, AK, OTHER_KEY)] + [k.hex() for k in (KEY, AK, OTHER_KEY)]


def msg(value: bytes, key: bytes | None = b"meter-1", offset: int = 0) -> RawMessage:
    return RawMessage(topic="meter.frames", partition=0, offset=offset, key=key, value=value)


def store() -> KeyStore:
    keys = KeyStore()
    keys.add(KEY, system_title=TITLE)
    return keys


def decoder(keys: KeyStore | None = None, state: dict[str, int] | None = None, **kw: int) -> FrameDecoder:
    return FrameDecoder(store() if keys is None else keys, CATALOGUE, {} if state is None else state, **kw)


def assert_no_key(rejected: list[Rejected], *errors: BaseException) -> None:
    texts = [r.detail for r in rejected] + [v for r in rejected for _, v in r.extra] + [str(e) for e in errors]
    for text in texts:
        for k in KEY_STRINGS:
            assert k not in text


def vector_push(**changes: object) -> Push:
    ts = int(datetime(2021, 7, 19, 13, 46, 35, tzinfo=UTC).timestamp() * 1000)
    regs = (
        Register("1-0:32.7.0", 2308, -1, 35, UINT16),
        Register("1-0:31.7.0", 0, -2, 33, UINT16),
        Register("1-0:1.7.0", 0, 0, 27, UINT32),
        Register("1-0:2.7.0", 0, 0, 27, UINT32),
        Register("1-0:1.8.0", 9108, 0, 30, UINT32),
        Register("1-0:2.8.0", 0, 0, 30, UINT32),
        Register("1-0:3.8.0", 96, 0, 32, UINT32),
        Register("1-0:4.8.0", 9, 0, 32, UINT32),
    )
    fields: dict[str, object] = dict(
        ts_ms=ts,
        registers=regs,
        meter_number="1KFM0100000035",
        logical_device_name="KFM1100100000035",
        deviation_minutes=-120,
        clock_status=0x80,
        invoke_id=0x0029B2DC,
    )
    fields.update(changes)
    return Push(**fields)  # type: ignore[arg-type]


# --- the vector ------------------------------------------------------------------------------


def test_vector_decodes_to_the_expected_reading() -> None:
    exp = VECTOR["expected"]
    readings, rejected = decoder().decode([msg(b"".join(FRAMES))], now_ms=0)
    assert rejected == []
    [r] = readings
    assert r.system_title == exp["system_title_hex"]
    assert r.frame_counter == exp["frame_counter"]
    assert f"0x{r.security_control:02X}" == exp["security_control"]
    assert f"0x{r.clock_status:02X}" == exp["clock_status"]
    assert r.deviation_minutes == exp["clock_deviation_minutes"]
    assert r.ts_ms == int(datetime.fromisoformat(exp["timestamp_utc"]).timestamp() * 1000)
    assert r.meter_number == exp["meter_number"] == r.device_id
    assert r.logical_device_name == exp["logical_device_name"]
    assert r.flags == 0  # 0x80 is DST only
    assert r.measurements == {BY_OBIS[o]: v["value"] for o, v in exp["values"].items()}
    assert r.unmapped == ()
    assert (r.msg_idx, r.message_count) == (0, 1)


def test_vector_layers_manufacturer_local_clock_and_units() -> None:
    exp = VECTOR["expected"]
    apdu = parse_ciphered(b"".join(f.payload for f in parse_frames(b"".join(FRAMES))))
    assert apdu.manufacturer == exp["manufacturer"] and not apdu.authenticated
    assert apdu.frame_counter.to_bytes(4, "big") == bytes.fromhex("00295B9A")
    note = parse_notification(decrypt(apdu, KEY))
    assert note.clock.local.replace(tzinfo=None).isoformat() == exp["clock_local"]
    assert note.clock.utc == datetime(2021, 7, 19, 13, 46, 35, tzinfo=UTC)
    assert {v.obis: (v.value, UNITS[v.unit or 255]) for v in note.values} == {
        o: (e["value"], {"V": "V", "A": "A", "W": "W", "Wh": "Wh", "varh": "varh"}[e["unit"]])
        for o, e in exp["values"].items()
    }


def test_segment_numbering_low_nibble_and_last_bit() -> None:
    frames = parse_frames(b"".join(FRAMES))
    assert [(f.ci, f.segment, f.last) for f in frames] == [(0x00, 0, False), (0x11, 1, True)]
    assert [parse_frames(f)[0].ci for f in segment_apdu(b"\xdb" * 600, max_payload=250)] == [0x00, 0x01, 0x12]
    assert parse_frames(segment_apdu(b"\xdb" * 10)[0])[0].ci == 0x10
    with pytest.raises(ValueError):
        segment_apdu(b"\x00" * 17, max_payload=1)


def test_encoder_reproduces_the_vector_byte_for_byte() -> None:
    frames = encode_frames(vector_push(), system_title=TITLE, frame_counter=2710426, key=KEY, security_control=0x21)
    assert frames == FRAMES


def test_vector_split_over_consecutive_messages_and_batches() -> None:
    dec = decoder()
    r1, j1 = dec.decode([msg(FRAMES[0], offset=1)], now_ms=0)
    assert (r1, j1, dec.pending) == ([], [], 1)
    readings, rejected = dec.decode([msg(b"", key=b"other"), msg(FRAMES[1], offset=2)], now_ms=100)
    assert [r.reason for r in rejected] == [Reason.EMPTY]
    [r] = readings
    assert (r.msg_idx, r.message_count, dec.pending) == (1, 2, 0)


# --- reassembly -------------------------------------------------------------------------------


def test_missing_segment_expires_as_incomplete_frame() -> None:
    dec = decoder(max_wait_ms=5_000)
    first = msg(FRAMES[0])
    assert dec.decode([first], now_ms=1_000) == ([], [])
    assert dec.expire(5_999) == []
    [rej] = dec.expire(6_000)
    assert rej.reason is Reason.INCOMPLETE_FRAME and rej.original == first and dec.pending == 0


def test_a_late_continuation_is_refused_and_the_stale_partial_expires() -> None:
    dec = decoder(max_wait_ms=5_000)
    dec.decode([msg(FRAMES[0])], now_ms=0)
    readings, [rej] = dec.decode([msg(FRAMES[1])], now_ms=10_000)
    assert readings == [] and rej.reason is Reason.INCOMPLETE_FRAME
    assert [r.reason for r in dec.expire(10_000)] == [Reason.INCOMPLETE_FRAME]


def test_new_first_segment_supersedes_a_pending_apdu_and_orphans_are_refused() -> None:
    dec = decoder()
    a = msg(FRAMES[0], offset=1)
    readings, rejected = dec.decode([a, msg(b"".join(FRAMES), offset=2), msg(FRAMES[1], offset=3)], now_ms=0)
    assert len(readings) == 1 and readings[0].msg_idx == 1
    assert [(r.reason, r.original.offset) for r in rejected] == [
        (Reason.INCOMPLETE_FRAME, 1),
        (Reason.INCOMPLETE_FRAME, 3),
    ]


def test_reassembler_refuses_out_of_order_without_touching_state() -> None:
    frames = parse_frames(b"".join(segment_apdu(b"\xdb" * 30, max_payload=10)))
    ra: Reassembler[int] = Reassembler(max_wait_ms=100)
    assert ra.feed(b"k", frames[:1], 0, lambda fs: 1) == ([], [])
    with pytest.raises(DlmsError) as err:
        ra.feed(b"k", frames[2:], 1, lambda fs: 2)
    assert err.value.reason is Reason.INCOMPLETE_FRAME and len(ra) == 1
    [done], [] = ra.feed(b"k", frames[1:], 2, lambda fs: 3)
    assert done.apdu == b"\xdb" * 30 and done.sources == (1, 3)


# --- failures ---------------------------------------------------------------------------------


def test_corrupted_checksum_stop_byte_and_lengths() -> None:
    good = b"".join(FRAMES)
    cases = {
        Reason.BAD_CHECKSUM: [
            good[:20] + bytes([good[20] ^ 1]) + good[21:],
            good[:255] + b"\x17" + good[256:],
            good[:2] + b"\xf9" + good[3:],
            b"\x00" + good[1:],
            good + b"\x00\x00\x00\x00",
        ],
        Reason.INCOMPLETE_FRAME: [good[:-1], good[:3]],
    }
    for reason, values in cases.items():
        for value in values:
            readings, [rej] = decoder().decode([msg(value)], now_ms=0)
            assert readings == [] and rej.reason is reason, value.hex()
            assert rej.original.value == value


def test_wrong_key_encryption_only_is_decrypt_failed() -> None:
    keys = KeyStore()
    keys.add(OTHER_KEY, system_title=TITLE)
    state: dict[str, int] = {}
    readings, rejected = decoder(keys, state).decode([msg(b"".join(FRAMES))], now_ms=0)
    assert readings == [] and [r.reason for r in rejected] == [Reason.DECRYPT_FAILED]
    assert ("system_title", TITLE) in rejected[0].extra and state == {}
    assert_no_key(rejected)


def test_authenticated_frames_wrong_key_and_missing_ak() -> None:
    frames = encode_frames(vector_push(), system_title=TITLE, frame_counter=7, key=KEY, auth_key=AK)
    assert parse_ciphered(b"".join(f.payload for f in parse_frames(b"".join(frames)))).security_control == 0x30
    outcomes = {}
    for name, (guek, ak) in {
        "ok": (KEY, AK),
        "wrong_ak": (KEY, OTHER_KEY),
        "wrong_guek": (OTHER_KEY, AK),
        "no_ak": (KEY, None),
    }.items():
        keys = KeyStore()
        keys.add(guek, authentication_key=ak, system_title=TITLE)
        readings, rejected = decoder(keys).decode([msg(b"".join(frames))], now_ms=0)
        outcomes[name] = [r.reason for r in rejected] or [len(readings)]
        assert_no_key(rejected)
    assert outcomes == {
        "ok": [1],
        "wrong_ak": [Reason.AUTH_FAILED],
        "wrong_guek": [Reason.AUTH_FAILED],
        "no_ak": [Reason.UNKNOWN_KEY],
    }


def test_low_level_errors_with_wrong_keys_do_not_show_keys() -> None:
    auth = encode_frames(vector_push(), system_title=TITLE, frame_counter=7, key=KEY, auth_key=AK)
    errors: list[DlmsError] = []
    for value, guek, ak in ((b"".join(FRAMES), OTHER_KEY, None), (b"".join(auth), OTHER_KEY, AK)):
        apdu = parse_ciphered(b"".join(f.payload for f in parse_frames(value)))
        with pytest.raises(DlmsError) as err:
            parse_notification(decrypt(apdu, guek, ak))
        errors.append(err.value)
    assert [e.reason for e in errors] == [Reason.DECRYPT_FAILED, Reason.AUTH_FAILED]
    assert_no_key([], *errors)


def test_replayed_counter_and_counter_only_advances_on_success() -> None:
    state: dict[str, int] = {}
    keys = KeyStore()
    keys.add(OTHER_KEY, system_title=TITLE)
    dec = decoder(keys, state)
    assert [r.reason for r in dec.decode([msg(b"".join(FRAMES))], 0)[1]] == [Reason.DECRYPT_FAILED]
    keys.add(KEY, system_title=TITLE)  # the right key arrives: the same frame is re-processed
    readings, rejected = dec.decode([msg(b"".join(FRAMES)), msg(b"".join(FRAMES))], 0)
    assert len(readings) == 1 and [r.reason for r in rejected] == [Reason.REPLAYED_FRAME]
    assert state == {TITLE: 2710426}
    # the state survives a new decoder (the Faust table after a restart)
    again = decoder(store(), state).decode([msg(b"".join(FRAMES))], 0)[1]
    assert [r.reason for r in again] == [Reason.REPLAYED_FRAME]
    assert_no_key(rejected + again)


def test_unknown_system_title_then_key_added() -> None:
    keys = KeyStore()
    dec = decoder(keys)
    [rej] = dec.decode([msg(b"".join(FRAMES))], 0)[1]
    assert rej.reason is Reason.UNKNOWN_KEY and TITLE in rej.detail
    keys.add(VECTOR["key_hex"].lower(), system_title=TITLE.lower())
    assert len(dec.decode([rej.original], 0)[0]) == 1


def test_key_known_by_meter_number_only() -> None:
    keys = KeyStore()
    keys.add(OTHER_KEY, meter_number="SOMEONE-ELSE")
    keys.add(KEY, meter_number=VECTOR["expected"]["meter_number"])
    dec = decoder(keys)
    [r] = dec.decode([msg(b"".join(FRAMES))], 0)[0]
    assert r.device_id == "1KFM0100000035"
    wrong = KeyStore()
    wrong.add(OTHER_KEY, meter_number="1KFM0100000035")
    [rej] = decoder(wrong).decode([msg(b"".join(FRAMES))], 0)[1]
    assert rej.reason is Reason.UNKNOWN_KEY


def test_unsupported_apdu_tags_and_security() -> None:
    plain = segment_apdu(bytes.fromhex("0f00000001000200"))[0]  # a clear data-notification
    glo_get = segment_apdu(bytes.fromhex("c8084b464d101000002305210000000100"))[0]
    compressed = segment_apdu(bytes.fromhex("db084b464d1010000023") + bytes([6, 0xA0, 0, 0, 0, 1, 0]))[0]
    for value in (plain, glo_get, compressed):
        [rej] = decoder().decode([msg(value)], 0)[1]
        assert rej.reason is Reason.UNSUPPORTED_APDU, value.hex()


# --- layouts, clock, catalogue -------------------------------------------------------------------


def test_flat_layout_clock_forms_unspecified_deviation_and_flags() -> None:
    push = vector_push(
        deviation_minutes=None,
        clock_status=0x03,
        header_clock="octet_string",
        registers=(
            Register("1-0:1.8.0", 5, 3, 30),
            Register("1-0:99.7.0", 1, 0, 27),
            Register("1-0:32.7.0", 2300, -1, 30),
        ),
    )
    frames = encode_frames(push, system_title=TITLE, frame_counter=9, key=KEY, layout=Layout.FLAT, max_payload=40)
    [r] = decoder().decode([msg(b"".join(frames))], 0)[0]
    assert r.utc_assumed and r.deviation_minutes is None
    assert r.ts_ms == push.ts_ms  # local time taken as UTC
    assert r.flags == Flag.CLOCK_INVALID | Flag.CLOCK_DOUBTFUL
    assert r.measurements == {"active_energy_import": 5000.0}
    assert r.unmapped == ("1-0:99.7.0", "1-0:32.7.0")  # not in the catalogue / unit Wh is not V


def test_header_clock_absent_uses_the_body_clock() -> None:
    push = vector_push(header_clock="absent", meter_number=None)
    frames = encode_frames(push, system_title=TITLE, frame_counter=9, key=KEY)
    [r] = decoder().decode([msg(b"".join(frames))], 0)[0]
    assert r.ts_ms == push.ts_ms and r.device_id == TITLE


# --- key store --------------------------------------------------------------------------------


def test_key_store_files_and_reprs(tmp_path: Path) -> None:
    toml = tmp_path / "keys.toml"
    toml.write_text(
        f'[[meter]]\nsystem_title = "{TITLE}"\nguek = "{KEY.hex()}"\nak = "{AK.hex().upper()}"\n'
        f'[[meter]]\nmeter_number = "X1"\nguek = "{OTHER_KEY.hex()}"\n'
    )
    js = tmp_path / "keys.json"
    js.write_text(json.dumps({"meter": [{"system_title": TITLE, "guek": KEY.hex()}]}))
    for path in (toml, js):
        keys = KeyStore.from_file(path)
        entry = keys.by_system_title(TITLE.lower())
        assert entry is not None and entry.encryption_key == KEY
        for text in (repr(keys), str(keys), repr(entry), str(entry)):
            assert not any(k in text for k in KEY_STRINGS)
    assert len(KeyStore.from_file(toml)) == 2 and KeyStore.from_file(toml).unbound()[0].meter_number == "X1"


@pytest.mark.parametrize(
    "content",
    [
        '[[meter]]\nsystem_title = "4B464D1010000023"\nguek = "101112131415161718191A1B1C1D1E1"\n',
        '[[meter]]\nsystem_title = "4B464D1010000023"\nguek = "101112131415161718191A1B1C1D1E1G"\n',
        '[[meter]]\nguek = "101112131415161718191A1B1C1D1E1F"\n',
        '[[meter]]\nsystem_title = "4B46"\nguek = "101112131415161718191A1B1C1D1E1F"\n',
        'guek = "101112131415161718191A1B1C1D1E1F\n',
    ],
)
def test_bad_key_files_never_echo_keys(tmp_path: Path, content: str) -> None:
    path = tmp_path / "keys.toml"
    path.write_text(content)
    with pytest.raises(ConfigError) as err:
        KeyStore.from_file(path)
    assert "101112131415161718191A1B1C1D1E1" not in str(err.value).upper()


# --- round trip ---------------------------------------------------------------------------------

CATALOGUE_UNIT_CODES = {v: k for k, v in UNITS.items()}
OBIS_POOL = [*sorted(BY_OBIS), "1-0:1.8.1", "1-0:99.7.0", "0-0:96.1.1", "1-0:1.8.0*96"]
TEXT = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20)


@st.composite
def registers(draw: st.DrawFn) -> tuple[Register, ...]:
    codes = draw(st.lists(st.sampled_from(OBIS_POOL), unique=True, max_size=14))
    out = []
    for code in codes:
        tag = draw(st.sampled_from(sorted(INTEGER_TAGS)))
        size, signed = INTEGER_TAGS[tag]
        lo, hi = (-(2 ** (8 * size - 1)), 2 ** (8 * size - 1) - 1) if signed else (0, 2 ** (8 * size) - 1)
        quantity = CATALOGUE.quantities.get(BY_OBIS.get(code, ""))
        right_unit = CATALOGUE_UNIT_CODES.get(quantity.unit, 255) if quantity else 255
        unit = draw(st.sampled_from([right_unit, right_unit, 27, 255]))
        out.append(Register(code, draw(st.integers(lo, hi)), draw(st.integers(-9, 9)), unit, tag))
    return tuple(out)


@st.composite
def pushes(draw: st.DrawFn) -> Push:
    header = draw(st.sampled_from(["bare", "octet_string", "absent"]))
    return Push(
        ts_ms=draw(st.integers(946_684_800_000 // 10, 4_102_444_799_000 // 10)) * 10,
        registers=draw(registers()),
        meter_number=draw(st.none() | TEXT),
        logical_device_name=draw(st.none() | TEXT),
        deviation_minutes=draw(st.none() | st.integers(-840, 840)),
        clock_status=draw(st.integers(0, 255)),
        invoke_id=draw(st.integers(0, 2**32 - 1)),
        header_clock=header,
        clock_in_body=header == "absent" or draw(st.booleans()),
    )


def split(frames: list[bytes], cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted({c % (len(frames) + 1) for c in cuts}), len(frames)]
    return [b"".join(frames[a:b]) for a, b in pairwise(bounds) if b > a]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    push=pushes(),
    layout=st.sampled_from(Layout),
    authenticated=st.booleans(),
    max_payload=st.integers(1, 250),
    counter=st.integers(0, 2**32 - 1),
    cuts=st.lists(st.integers(0, 16)),
)
def test_round_trip(
    push: Push, layout: Layout, authenticated: bool, max_payload: int, counter: int, cuts: list[int]
) -> None:
    keys = KeyStore()
    keys.add(KEY, authentication_key=AK, system_title=TITLE)
    ak = AK if authenticated else None
    probe = encode_frames(
        push, system_title=TITLE, frame_counter=counter, key=KEY, auth_key=ak, max_payload=250, layout=layout
    )
    apdu_len = sum(len(f) - 11 for f in probe)
    max_payload = max(max_payload, -(-apdu_len // 16))
    frames = encode_frames(
        push, system_title=TITLE, frame_counter=counter, key=KEY, auth_key=ak, max_payload=max_payload, layout=layout
    )
    messages = [msg(v, offset=i) for i, v in enumerate(split(frames, cuts))]
    readings, rejected = decoder(keys).decode(messages, now_ms=0)
    assert rejected == []
    [r] = readings
    expected: dict[str, float] = {}
    unmapped = []
    for reg in push.registers:
        code = BY_OBIS.get(reg.obis)
        if code is not None and UNITS.get(reg.unit) == CATALOGUE[code].unit:
            expected[code] = scale(reg.raw, reg.scaler)
        else:
            unmapped.append(reg.obis)
    assert r.measurements == expected and r.unmapped == tuple(unmapped)
    expected_ts = push.ts_ms
    assert r.ts_ms == expected_ts
    assert (r.deviation_minutes, r.clock_status) == (push.deviation_minutes, push.clock_status)
    assert r.flags == (0 if push.clock_status == 0xFF else push.clock_status & 3)
    assert (r.meter_number, r.logical_device_name) == (push.meter_number, push.logical_device_name)
    assert r.device_id == (push.meter_number or TITLE)
    assert (r.frame_counter, r.invoke_id) == (counter, push.invoke_id)
    assert r.security_control == (0x30 if authenticated else 0x20)
    assert (r.msg_idx, r.message_count) == (len(messages) - 1, len(messages))
