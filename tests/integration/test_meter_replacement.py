"""A "meter replaced" registry event lets the stream count the swap exactly (meters.md rule 3).

An electricity meter is replaced between two readings: the registry update carries the old
meter's final register and the new meter's first one. Through the real worker the
consumption of every interval, and the day's total, must equal what both meters really
counted, nothing lost to the swap and nothing negative, with the swap recorded as a
``replacement`` (flagged like a reset), never as a plain reset. The old meter's last
readings arrive late, after the new meter's: the result is the same.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from pipeline.codecs import Encoder, RecordType, SchemaStore, WireFormat
from pipeline.flags import Flag
from pipeline.simulate import READINGS_TOPIC, REGISTRY_TOPIC, OutMessage, produce
from tests.conftest import Env

pytestmark = pytest.mark.integration
DEVICE, CODE, STEP = "rp-site-01-em01", "active_energy_import", 300_000
OLD_START, NEW_FIRST, PER_STEP = 1_234_567.8, 12.5, 450.0


def _registration(encode: Encoder, at: int, replaced: dict[str, Any] | None) -> OutMessage:
    record = {"subject_id": DEVICE, "subject_type": "device", "kind": "electricity_meter", "tenant_id": "rp",
              "site_id": "rp-site-01", "timezone": "Asia/Kolkata", "rated_power_w": 50_000.0,
              "expected_period_s": 300, "event": "replaced" if replaced else "registered", "replaced": replaced,
              "updated_at": at}  # fmt: skip
    return OutMessage(REGISTRY_TOPIC, DEVICE.encode(), encode(RecordType.DEVICE_REGISTRATION, record, WireFormat.AVRO))


def _reading(encode: Encoder, ts: int, value: float) -> OutMessage:
    record = {"device_id": DEVICE, "ts": ts, "measurements": {CODE: value}, "event_id": None, "seq": None,
              "quality": 0}  # fmt: skip
    return OutMessage(READINGS_TOPIC, DEVICE.encode(), encode(RecordType.METER_READING, record, WireFormat.AVRO))


def test_a_replaced_meter_loses_nothing_across_the_swap(env: Env) -> None:
    encode = Encoder(SchemaStore.load())
    t0 = int(time.time() * 1000) // 3_600_000 * 3_600_000 - 4 * 3_600_000
    old = [(t0 + i * STEP, round(OLD_START + i * PER_STEP, 1)) for i in range(24)]  # 2 hours of the old meter
    swap = old[-1][0] + 120_000  # removed 2 minutes after its last reading ...
    old_final = old[-1][1] + 180.0  # ... having counted 180 Wh more
    new = [(swap + 180_000 + i * STEP, NEW_FIRST + 270.0 + i * PER_STEP) for i in range(24)]  # first after 3 min
    replaced = {"old_final": {CODE: old_final}, "new_first": {CODE: NEW_FIRST}, "at": swap}
    truth = (old_final - old[0][1]) + (new[-1][1] - NEW_FIRST)

    worker = env.worker().start()
    try:
        produce([_registration(encode, t0 - 86_400_000, None)], bootstrap=env.bootstrap, topic_prefix=env.prefix)
        worker.wait_processed({"registry.devices": 1})
        produce([_reading(encode, t, v) for t, v in old[:-3]], bootstrap=env.bootstrap, topic_prefix=env.prefix)
        produce([_registration(encode, swap + 60_000, replaced)], bootstrap=env.bootstrap, topic_prefix=env.prefix)
        worker.wait_processed({"registry.devices": 2, "meter.readings": len(old) - 3})
        late_old = [_reading(encode, t, v) for t, v in old[-3:]]  # the old meter's last readings come late
        produce([_reading(encode, t, v) for t, v in new] + late_old, bootstrap=env.bootstrap, topic_prefix=env.prefix)
        worker.wait_processed({"meter.readings": len(old) + len(new)})
        intervals = worker.query(
            "SELECT toUnixTimestamp64Milli(interval_start), measured, estimated, flags FROM energy_intervals "
            f"WHERE device_id = '{DEVICE}' AND quantity = '{CODE}' ORDER BY interval_start"
        )
        events = worker.query(f"SELECT kind, toUnixTimestamp64Milli(ts), delta FROM register_events "
                              f"WHERE device_id = '{DEVICE}'")  # fmt: skip
        daily = worker.query(f"SELECT sum(measured), sum(estimated) FROM consumption_daily_device "
                             f"WHERE device_id = '{DEVICE}' AND quantity = '{CODE}'")  # fmt: skip
    finally:
        worker.stop()

    assert sum(r[1] for r in intervals) == pytest.approx(truth, rel=1e-12)
    assert all(r[1] >= 0 and r[2] == 0 for r in intervals)
    assert daily[0][0] == pytest.approx(truth, rel=1e-12) and daily[0][1] == 0
    swap_pair = (old_final - old[-1][1]) + (new[0][1] - NEW_FIRST)  # 180 + 270 Wh over [last old, first new)
    assert events == [["replacement", new[0][0], pytest.approx(swap_pair)]]
    flagged = [r[0] for r in intervals if r[3] & int(Flag.RESET)]
    assert flagged == [old[-1][0] // 900_000 * 900_000]  # the interval holding the swap, and only it
    # 180 Wh + 270 Wh across the swap = one ordinary 5-minute step: every full interval, the swap's
    # included, holds three steps; the last one (two readings after its start) two
    assert [round(r[1], 6) for r in intervals] == [3 * PER_STEP] * 15 + [2 * PER_STEP]
