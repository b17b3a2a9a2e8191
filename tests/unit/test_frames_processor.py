"""FramesProcessor: decoded DLMS readings through the shared readings tail, registry, replay counters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.catalogue import load_catalogue
from pipeline.dlms import KeyStore, Layout, Push, Register, encode_frames
from pipeline.envelope import RawMessage, Reason
from pipeline.errors import ConfigError
from pipeline.flags import Flag
from pipeline.settings import Settings
from pipeline.sinks.deadletter import deadletter_headers
from pipeline.tenancy import Registry
from pipeline.validation import DuplicateFilter, ReadingValidator
from pipeline.worker.frames import FramesProcessor, ReplayCounters, load_keys

CATALOGUE = load_catalogue()
TITLE = "4B464D1010000023"
METER = "1KFM0100000035"
KEY = bytes(range(0x10, 0x20))
AK = bytes(range(0xD0, 0xE0))
OTHER = bytes(range(0x40, 0x50))
SECRETS = [k.hex() for k in (KEY, AK, OTHER)] + [k.hex().upper() for k in (KEY, AK, OTHER)]
NOW = 1_795_000_000_000
DAY = 86_400_000


def push(ts: int, *, meter: str = METER, status: int = 0, power: float = 1234.0) -> Push:
    return Push(
        ts_ms=ts,
        registers=(
            Register.of("1-0:1.8.0", 123456, unit=30),
            Register.of("1-0:1.7.0", power, unit=27),
            Register.of("1-0:32.7.0", 231.4, scaler=-1, unit=35),
            Register.of("1-0:31.7.0", 5.12, scaler=-2, unit=33),
        ),
        meter_number=meter,
        deviation_minutes=-60,
        clock_status=status,
    )


def frames(
    counter: int, ts: int = NOW - 60_000, *, key: bytes = KEY, auth: bytes | None = None, **kw: object
) -> list[bytes]:
    layout = kw.pop("layout", Layout.NESTED)
    return encode_frames(push(ts, **kw), system_title=TITLE, frame_counter=counter, key=key, auth_key=auth,  # type: ignore[arg-type]
                         layout=layout, max_payload=40)  # fmt: skip


def msgs(*values: bytes, start: int = 0, key: bytes = b"meter-1") -> list[RawMessage]:
    return [RawMessage("t.meter.frames", 1, start + i, key, v) for i, v in enumerate(values)]


def registry(key_id: str | None = TITLE, meter: str = METER) -> Registry:
    reg = Registry()
    reg.put({"subject_id": meter, "subject_type": "device", "kind": "electricity_meter", "tenant_id": "tenant-a",
             "site_id": "site-1", "key_id": key_id})  # fmt: skip
    return reg


def processor(reg: Registry | None = None, counters: ReplayCounters | None = None, keys: KeyStore | None = None,
              **kw: int) -> FramesProcessor:  # fmt: skip
    if keys is None:
        keys = KeyStore()
        keys.add(KEY, authentication_key=AK, system_title=TITLE)
    return FramesProcessor(keys, CATALOGUE, ReadingValidator(CATALOGUE, lateness_ms=30 * DAY),
                           registry() if reg is None else reg, DuplicateFilter(), counters, **kw)  # fmt: skip


def assert_no_secret(rejects: list) -> None:
    for r in rejects:
        texts = [r.detail, *(v.decode("latin-1") for _, v in deadletter_headers(r, NOW))]
        for text in texts:
            for s in SECRETS:
                assert s not in text


def test_encrypted_frames_become_tagged_rows_with_clock_flags() -> None:
    proc = processor()
    split = frames(5, status=0x02)  # several segments, one message each
    assert len(split) > 1
    batch = msgs(b"".join(frames(4, NOW - 120_000)), *split)
    result = proc(batch, NOW)
    assert result.rejects == [] and result.accepted == 8
    t = result.tables["readings_store"].to_pylist()
    assert {r["tenant_id"] for r in t} == {"tenant-a"} and {r["device_id"] for r in t} == {METER}
    by_q = {(r["quantity"], r["ts"].timestamp() * 1000): r for r in t}
    assert by_q[("voltage_l1", NOW - 60_000)]["value"] == 231.4
    assert by_q[("current_l1", NOW - 60_000)]["value"] == 5.12
    assert by_q[("active_energy_import", NOW - 120_000)]["flags"] == 0
    assert by_q[("active_energy_import", NOW - 60_000)]["flags"] == Flag.CLOCK_DOUBTFUL
    assert by_q[("active_power", NOW - 60_000)]["src_offset"] == len(batch) - 1  # the completing message
    assert proc.counters.get(TITLE) is None  # not before the runner made the batch durable
    assert proc.persist_counters() == 1 and proc.counters.get(TITLE) == 5


def test_failures_are_dead_letters_with_their_reason_and_no_key() -> None:
    keys = KeyStore()
    keys.add(KEY, system_title=TITLE)
    proc = processor(keys=keys)
    good = b"".join(frames(10))
    bad_cs = bytearray(good)
    bad_cs[-2] ^= 0xFF
    wrong = b"".join(frames(11, key=OTHER))
    result = proc(msgs(good, good, bytes(bad_cs), wrong), NOW)
    assert [r.reason for r in result.rejects] == [Reason.REPLAYED_FRAME, Reason.BAD_CHECKSUM, Reason.DECRYPT_FAILED]
    assert result.accepted == 4
    auth_keys = KeyStore()
    auth_keys.add(KEY, authentication_key=OTHER, system_title=TITLE)
    res = processor(keys=auth_keys)(msgs(b"".join(frames(3, auth=AK))), NOW)
    assert [r.reason for r in res.rejects] == [Reason.AUTH_FAILED]
    assert_no_secret(result.rejects + res.rejects)


def test_unregistered_meter_and_wrong_key_id_keep_the_counter_and_the_frames() -> None:
    split = frames(20)
    for reg, tenant in ((Registry(), ""), (registry(key_id="AAAAAAAAAAAAAAAA"), "tenant-a")):
        counters = ReplayCounters()
        batch = msgs(*split, start=100)
        proc = processor(reg, counters)
        result = proc(batch, NOW)
        assert result.accepted == 0 and proc.persist_counters() == 0
        # one dead letter per source message, each with exactly the frames it carried
        assert [(r.reason, r.original.offset, r.payload, r.tenant_id) for r in result.rejects] == [
            (Reason.UNKNOWN_DEVICE, 100 + i, None, tenant) for i in range(len(split))
        ]
        assert counters.get(TITLE) is None
        # after the registration (or its fix) the very same frames are accepted
        proc = processor(registry(), counters)
        again = proc(batch, NOW)
        assert again.rejects == [] and again.accepted == 4 and proc.persist_counters() == 1
        assert counters.get(TITLE) == 20


def test_validation_rejects_carry_the_frames_and_the_counter_moves() -> None:
    counters = ReplayCounters()
    proc = processor(counters=counters)
    value = b"".join(frames(30, power=9e9))  # active_power far out of range
    result = proc(msgs(value), NOW)
    assert result.accepted == 3 and proc.persist_counters() == 1
    [rej] = result.rejects
    assert rej.reason is Reason.OUT_OF_RANGE and rej.payload is None and rej.tenant_id == "tenant-a"
    assert ("system_title", TITLE) in rej.extra and counters.get(TITLE) == 30


def test_missing_segment_expires_as_incomplete_frame() -> None:
    proc = processor(max_wait_ms=1_000)
    split = frames(40)
    first = msgs(split[0])
    assert proc(first, NOW).rejects == [] and proc.pending == 1
    [rej] = proc.expire(NOW + 1_000)
    assert rej.reason is Reason.INCOMPLETE_FRAME and rej.original == first[0]
    # expired at the next batch too
    proc(msgs(split[0], start=5), NOW)
    [late] = proc(msgs(b"".join(frames(41)), start=6), NOW + 5_000).rejects
    assert late.reason is Reason.INCOMPLETE_FRAME and late.original.offset == 5


def test_counters_persist_through_the_store_and_never_move_back() -> None:
    store: dict[str, bytes] = {}
    writes: list[tuple[str, bytes, int]] = []

    def write(title: str, value: bytes, partition: int) -> None:
        store[title] = value
        writes.append((title, value, partition))

    counters = ReplayCounters(store, write)
    proc = processor(counters=counters)
    proc(msgs(b"".join(frames(7))), NOW)
    assert writes == []
    [rej] = proc(msgs(b"".join(frames(7))), NOW).rejects  # the guard knows it before the table does
    assert rej.reason is Reason.REPLAYED_FRAME
    proc.persist_counters()
    assert writes == [(TITLE, b"7", 1)]
    store[TITLE] = b"3"  # a stale changelog echo
    assert counters.get(TITLE) == 7
    restarted = processor(counters=ReplayCounters({TITLE: b"7"}))
    [rej] = restarted(msgs(b"".join(frames(7))), NOW).rejects
    assert rej.reason is Reason.REPLAYED_FRAME


def test_key_file_setting_and_errors_do_not_show_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"meter": [{"system_title": TITLE, "guek": KEY.hex(), "ak": AK.hex()}]}))
    settings = Settings(dlms_keys_file=path, dlms_max_wait_ms=5000)
    keys = load_keys(settings.dlms_keys_file)
    assert len(keys) == 1 and KEY.hex() not in repr(keys) + str(keys.by_system_title(TITLE))
    path.write_text(json.dumps({"meter": [{"system_title": TITLE, "guek": KEY.hex()[:-2] + "zz"}]}))
    with pytest.raises(ConfigError) as err:
        load_keys(path)
    assert all(s[:20] not in str(err.value) for s in SECRETS)
    assert len(load_keys(None)) == 0


def test_accepted_rows_go_through_the_derive_stage_like_meter_readings() -> None:
    seen: list[tuple[list[str], int]] = []

    def derive(rows, now_ms):  # type: ignore[no-untyped-def]
        seen.append((sorted(set(rows["quantity"])), now_ms))
        return {"intervals_store": rows.to_arrow().slice(0, 0)}

    keys = KeyStore()
    keys.add(KEY, system_title=TITLE)
    proc = FramesProcessor(keys, CATALOGUE, ReadingValidator(CATALOGUE, lateness_ms=30 * DAY), registry(),
                           DuplicateFilter(), derive=derive)  # fmt: skip
    result = proc(msgs(b"".join(frames(3))), NOW)
    assert set(result.tables) == {"readings_store", "intervals_store"}
    assert seen == [(["active_energy_import", "active_power", "current_l1", "voltage_l1"], NOW)]
