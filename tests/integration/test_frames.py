"""Encrypted DLMS/COSEM frames on meter.frames through the real broker, a real worker and chDB.

Keys come from a key file named by ``DLMS_KEYS_FILE``; none of them may show up on the
dead-letter topic, in the worker log or in ClickHouse.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.codecs import Decoder, Encoder, RecordType, SchemaStore
from pipeline.dlms import Layout, Push, Register, encode_frames
from tests.conftest import Env
from tests.support import WorkerProcess, consume_all, header, produce

pytestmark = pytest.mark.integration

KEY_A = bytes.fromhex("101112131415161718191A1B1C1D1E1F")
KEY_B = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AK_B = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
WRONG = bytes.fromhex("404142434445464748494A4B4C4D4E4F")
SECRETS = [k.hex() for k in (KEY_A, KEY_B, AK_B, WRONG)]

# meter number, system title, tenant
A = ("1KFM0100000035", "4B464D1010000023", "tenant-x")  # encryption only, nested layout
B = ("1SAG0200000042", "5341471020000042", "tenant-y")  # authenticated, flat layout
C = ("1KFM0100000077", "4B464D1010000077", "tenant-x")  # the key file holds a wrong key
D = ("1ISK0300000099", "49534B1030000099", "tenant-y")  # authenticated, the key file holds a wrong AK


def _key_file(path: Path) -> Path:
    path.write_text(json.dumps({"meter": [
        {"system_title": A[1], "guek": KEY_A.hex()},
        {"system_title": B[1], "guek": KEY_B.hex(), "ak": AK_B.hex()},
        {"system_title": C[1], "guek": WRONG.hex()},
        {"system_title": D[1], "guek": KEY_B.hex(), "ak": WRONG.hex()},
    ]}))  # fmt: skip
    return path


def _register(env: Env, worker: WorkerProcess, *meters: tuple[str, str, str]) -> None:
    enc = Encoder(SchemaStore.load())
    now = int(time.time() * 1000)
    regs = [
        (m.encode(), enc(RecordType.DEVICE_REGISTRATION, {
            "subject_id": m, "subject_type": "device", "kind": "electricity_meter", "tenant_id": tenant,
            "site_id": f"{tenant}-site", "timezone": "Europe/Vienna", "key_id": title, "updated_at": now}))
        for m, title, tenant in meters
    ]  # fmt: skip
    produce(env.bootstrap, env.topic("registry.devices"), regs)
    worker.wait_processed({"registry.devices": len(regs)})


def _reasons(dead: list[Any]) -> dict[str, int]:
    """Dead letters per reason, each source position once: the dead-letter topic is at-least-once."""
    where = {(header(m, "dl.reason"), header(m, "dl.source.partition"), header(m, "dl.source.offset")) for m in dead}
    return dict(Counter(reason for reason, _, _ in where))


def _eventually(probe: Callable[[], Any], expected: Any, timeout: float = 60.0) -> Any:
    """Poll until ``probe()`` returns ``expected`` (processed counts include redeliveries, rows do not)."""
    deadline = time.monotonic() + timeout
    while (value := probe()) != expected and time.monotonic() < deadline:
        time.sleep(0.5)
    return value


def _push(meter: str, ts: int, energy: float, status: int = 0x80) -> Push:
    return Push(
        ts_ms=ts,
        registers=(
            Register.of("1-0:1.8.0", energy, unit=30),
            Register.of("1-0:2.8.0", 0, unit=30),
            Register.of("1-0:1.7.0", 812, unit=27),
            Register.of("1-0:32.7.0", 229.7, scaler=-1, unit=35),
            Register.of("1-0:31.7.0", 3.54, scaler=-2, unit=33),
        ),
        meter_number=meter,
        deviation_minutes=-60,
        clock_status=status,
    )


def _frames(meter: tuple[str, str, str], counter: int, ts: int, key: bytes, ak: bytes | None = None,
            **kw: object) -> list[bytes]:  # fmt: skip
    status = int(kw.pop("status", 0x80))  # type: ignore[call-overload]
    push = _push(meter[0], ts, 1_000_000 + counter, status)
    return encode_frames(push, system_title=meter[1], frame_counter=counter, key=key, auth_key=ak, **kw)  # type: ignore[arg-type]


def _assert_no_secret(env: Env, worker: WorkerProcess, dead: list) -> None:
    texts = [worker.log_path.read_text(errors="replace")]
    for m in dead:
        texts += [v.decode("latin-1") for _, v in m.headers() or []]
        texts.append((m.value() or b"").hex())
        assert not any(k in (m.value() or b"") for k in (KEY_A, KEY_B, AK_B, WRONG))
    for detail, key, extra in worker.query("SELECT detail, message_key, reason FROM deadletter_store"):
        texts += [detail, key, extra]
    for text in texts:
        low = text.lower()
        for secret in SECRETS:
            assert secret not in low


def test_encrypted_frames_become_tenant_rows_and_failures_dead_letters(env: Env) -> None:
    keys = _key_file(env.tmp_path / "keys.json")
    worker = env.worker(DLMS_KEYS_FILE=str(keys), DLMS_MAX_WAIT_MS="2000", LOG_LEVEL="INFO").start()
    try:
        _register(env, worker, A, B, C, D)
        t = (int(time.time() * 1000) - 600_000) // 1000 * 1000
        a1 = _frames(A, 100, t, KEY_A)
        a2 = _frames(A, 101, t + 5_000, KEY_A, max_payload=48, status=0x82)  # split, one frame per message
        b1 = _frames(B, 7, t, KEY_B, AK_B, layout=Layout.FLAT)
        bad_cs = bytearray(b"".join(_frames(A, 102, t + 10_000, KEY_A)))
        bad_cs[-2] ^= 0x5A
        messages = [
            (b"meter-a", b"".join(a1)),
            *((b"meter-a", f) for f in a2),
            (b"meter-b", b"".join(b1)),
            (b"meter-a", b"".join(a1)),  # the same counter again: replayed_frame
            (b"meter-a", bytes(bad_cs)),  # bad_checksum
            (b"meter-c", b"".join(_frames(C, 1, t, KEY_A))),  # wrong key, no tag: decrypt_failed
            (b"meter-d", b"".join(_frames(D, 1, t, KEY_B, AK_B))),  # wrong AK: auth_failed
            (b"meter-b", _frames(B, 8, t + 5_000, KEY_B, AK_B, max_payload=64)[0]),  # the rest never comes
        ]
        assert len(a2) > 1
        produce(env.bootstrap, env.topic("meter.frames"), messages)
        worker.wait_processed({"meter.frames": len(messages)})

        sql = "SELECT tenant_id, device_id, count(), max(flags) FROM readings GROUP BY tenant_id, device_id ORDER BY 2"
        expected_rows = [["tenant-x", A[0], 10, 2], ["tenant-y", B[0], 5, 0]]  # CLOCK_DOUBTFUL on a2
        assert _eventually(lambda: worker.query(sql), expected_rows) == expected_rows
        values = worker.query(f"SELECT quantity, value FROM readings WHERE device_id = '{B[0]}' ORDER BY quantity")
        assert values == [["active_energy_export", 0.0], ["active_energy_import", 1_000_007.0],
                          ["active_power", 812.0], ["current_l1", 3.54], ["voltage_l1", 229.7]]  # fmt: skip
        ts = worker.query(f"SELECT toUnixTimestamp64Milli(min(ts)) FROM readings WHERE device_id = '{A[0]}'")
        assert ts == [[t]]
        # clock_invalid through the real pipeline: A's second push has the clock status "doubtful" bit set
        decode = Decoder(SchemaStore.load())

        def clock_alerts() -> set[tuple[str, str]]:
            alerts = (decode(m.value())[1] for m in consume_all(env.bootstrap, env.topic("alerts")))
            return {(a["subject_id"], a["state"]) for a in alerts if a["rule"] == "clock_invalid"}

        assert _eventually(clock_alerts, {(A[0], "raised")}) == {(A[0], "raised")}  # not B: status bits clear

        # incomplete_frame: expired by the worker's timer after DLMS_MAX_WAIT_MS, no other frame needed
        expected = {"replayed_frame": 1, "bad_checksum": 1, "decrypt_failed": 1, "auth_failed": 1,
                    "incomplete_frame": 1}  # fmt: skip
        _eventually(lambda: _reasons(consume_all(env.bootstrap, env.topic("deadletter"))), expected)
        dead = consume_all(env.bootstrap, env.topic("deadletter"))
        replayed = {header(m, "frame_counter") for m in dead if header(m, "dl.reason") == "replayed_frame"}
        assert "100" in replayed and replayed <= {"100", "101"}  # 101: only if the broker redelivered it
        assert {k: v for k, v in _reasons(dead).items() if k != "replayed_frame"} == {
            k: v for k, v in expected.items() if k != "replayed_frame"}  # fmt: skip
        assert all(header(m, "dl.source.topic") == env.topic("meter.frames") for m in dead)
        by_reason = {header(m, "dl.reason"): m for m in dead}
        assert header(by_reason["decrypt_failed"], "system_title") == C[1]
        assert header(by_reason["replayed_frame"], "frame_counter") == "100"
        assert by_reason["replayed_frame"].value() == b"".join(a1)  # the original bytes, for replay
        summary = worker.query("SELECT reason, sum(records) FROM deadletter_summary GROUP BY reason ORDER BY reason")
        assert summary == sorted([k, v] for k, v in _reasons(dead).items())
        _assert_no_secret(env, worker, dead)
    finally:
        worker.stop()
    log = worker.log_path.read_text(errors="replace").lower()
    assert all(secret not in log for secret in SECRETS)


def test_replay_state_survives_a_worker_restart(env: Env) -> None:
    keys = _key_file(env.tmp_path / "keys.json")
    t = (int(time.time() * 1000) - 600_000) // 1000 * 1000
    first = env.worker(DLMS_KEYS_FILE=str(keys)).start()
    try:
        _register(env, first, A)
        produce(env.bootstrap, env.topic("meter.frames"), [(b"meter-a", b"".join(_frames(A, 500, t, KEY_A)))])
        assert _eventually(lambda: first.query("SELECT count() FROM readings"), [[5]]) == [[5]]
    finally:
        first.stop()

    # same consumer group and database: the counter comes back from the dlms_replay changelog
    second = env.worker(DLMS_KEYS_FILE=str(keys)).start()
    try:
        produce(env.bootstrap, env.topic("meter.frames"), [
            (b"meter-a", b"".join(_frames(A, 500, t, KEY_A))),  # the same frame again
            (b"meter-a", b"".join(_frames(A, 499, t - 5_000, KEY_A))),  # an older counter
            (b"meter-a", b"".join(_frames(A, 501, t + 5_000, KEY_A))),  # the next one
        ])  # fmt: skip
        assert _eventually(lambda: second.query("SELECT count() FROM readings"), [[10]]) == [[10]]

        def replayed() -> set[str | None]:
            dead = consume_all(env.bootstrap, env.topic("deadletter"))
            return {header(m, "frame_counter") for m in dead if header(m, "dl.reason") == "replayed_frame"}

        _eventually(lambda: {"499", "500"} <= replayed(), True)
        assert {"499", "500"} <= replayed() <= {"499", "500", "501"}  # 501 only if the broker redelivered it
    finally:
        second.stop()


E = ("1KFM0100000123", "4B464D1010000123", "tenant-x")  # its key arrives late


def _replay_cli(env: Env, *args: str, ok: bool = True) -> str:
    """``telemetry deadletter replay`` as an operator runs it (retried while the stopped group settles)."""
    cmd = [sys.executable, "-m", "pipeline", "deadletter", "replay", "--reason", "unknown_key",
           "--topic", "meter.frames", *args]  # fmt: skip
    run_env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": env.bootstrap, "TOPIC_PREFIX": env.prefix,
               "CONSUMER_GROUP": env.group, "COLUMNS": "200"}  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        out = subprocess.run(cmd, env=run_env, capture_output=True, text=True, timeout=120)
        if out.returncode == 0 or time.monotonic() > deadline or "stop its workers" not in out.stdout:
            break
        time.sleep(2)
    assert (out.returncode == 0) == ok, out.stdout + out.stderr
    return " ".join(out.stdout.split())  # rich wraps long lines


def test_unknown_key_frames_are_reprocessed_after_the_key_is_added(env: Env) -> None:
    keys = _key_file(env.tmp_path / "keys.json")  # without E's key
    t = (int(time.time() * 1000) - 600_000) // 1000 * 1000
    first = env.worker(DLMS_KEYS_FILE=str(keys)).start()
    try:
        _register(env, first, E)
        early = [(b"meter-e", b"".join(_frames(E, 1, t, KEY_A))),
                 *((b"meter-e", f) for f in _frames(E, 2, t + 5_000, KEY_A, max_payload=100))]  # fmt: skip
        produce(env.bootstrap, env.topic("meter.frames"), early)
        dead_letters = lambda: _reasons(consume_all(env.bootstrap, env.topic("deadletter")))  # noqa: E731
        assert _eventually(dead_letters, {"unknown_key": len(early)}) == {"unknown_key": len(early)}
        assert first.query("SELECT count() FROM readings") == [[0]]
    finally:
        first.stop()

    # A newer frame arrives while the workers are stopped: replayed now, the dead letters would come after it
    # and be refused. Apache Kafka lets the command move it behind them; the embedded broker refuses to move
    # a group's offsets, so the command refuses too -- before producing anything.
    produce(env.bootstrap, env.topic("meter.frames"), [(b"meter-e", b"".join(_frames(E, 3, t + 10_000, KEY_A)))])
    refused = _replay_cli(env, ok=False)
    assert "refuses to move the offsets" in refused, refused
    assert len(consume_all(env.bootstrap, env.topic("meter.frames"))) == len(early) + 1

    # so the worker drains it (still without the key) to the dead letters; then the key is added and all replayed
    drain = env.worker(DLMS_KEYS_FILE=str(keys)).start()
    try:
        assert _eventually(dead_letters, {"unknown_key": len(early) + 1}) == {"unknown_key": len(early) + 1}
    finally:
        drain.stop()
    entries = json.loads(keys.read_text())
    entries["meter"].append({"system_title": E[1], "guek": KEY_A.hex()})
    keys.write_text(json.dumps(entries))
    out = _replay_cli(env)
    assert f"{len(early) + 1} replayed" in out, out

    second = env.worker(DLMS_KEYS_FILE=str(keys)).start()
    try:
        sql = f"SELECT count(), uniqExact(ts), any(tenant_id) FROM readings WHERE device_id = '{E[0]}'"
        assert _eventually(lambda: second.query(sql), [[15, 3, "tenant-x"]]) == [[15, 3, "tenant-x"]]
        produce(env.bootstrap, env.topic("meter.frames"), [(b"meter-e", b"".join(_frames(E, 4, t + 15_000, KEY_A)))])
        assert _eventually(lambda: second.query(sql), [[20, 4, "tenant-x"]]) == [[20, 4, "tenant-x"]]
        reasons = dead_letters()  # a frame the broker redelivered after its acceptance is a replayed_frame
        assert reasons.pop("unknown_key") == len(early) + 1 and set(reasons) <= {"replayed_frame"}
    finally:
        second.stop()
    # replaying again would be refused by the guard: the command says so and sends nothing
    out = _replay_cli(env, "--dry-run")
    assert f"{len(early) + 1} frame(s) already overtaken" in out and "0 to replay" in out, out
