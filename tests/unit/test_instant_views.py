"""The instantaneous rollup views (sql/010) equal the pure reference, on real chDB.

Readings of devices in three registry time zones (one crossing the end of US daylight saving
time) and one without a registration, with a redelivered key carrying another value, go into
readings_store; every instant_{hourly,daily}_{device,site,tenant} view must give the min, avg,
max and count of :func:`pipeline.derive.instantaneous_rollup` on the same rows (first value of
a key wins, local days per device).
"""

from __future__ import annotations

import datetime as dt
import random
import re
from typing import Any

import polars as pl
import pyarrow as pa
import pytest

from pipeline.catalogue import load_catalogue
from pipeline.derive import instantaneous_codes, instantaneous_rollup
from pipeline.resources import sql_dir
from pipeline.storage import Database
from pipeline.worker.schemas import READINGS

# 2026-11-01: New York leaves daylight saving time at 06:00 UTC; recent, so no TTL removes the rows
BASE_MS = int(dt.datetime(2026, 10, 31, 12, tzinfo=dt.UTC).timestamp() * 1000)
ZONES = {"d-in": ("s-in", "Asia/Kolkata"), "d-ny": ("s-us", "America/New_York"), "d-ny2": ("s-us", "America/New_York"),
         "d-at": ("s-at", "Europe/Vienna"), "d-none": ("s-at", None)}  # fmt: skip
LEVEL_KEYS = {"device": ["tenant_id", "site_id", "device_id"], "site": ["tenant_id", "site_id"],
              "tenant": ["tenant_id"]}  # fmt: skip


def _rows() -> pl.DataFrame:
    rng, out, offset = random.Random(4), [], 0
    for device, (site, _) in ZONES.items():
        for q in ("voltage_l1", "frequency", "hvac_supply_air_temp"):
            for step in range(0, 40 * 60, 7):  # every 7 minutes over 40 hours
                offset += 1
                out.append(("t1", site, device, q, BASE_MS + step * 60_000, round(rng.uniform(1, 300), 2), offset))
        out.append(("t1", site, device, "active_energy_import", BASE_MS, 5.0, 0))  # cumulative: not rolled up
    first = out[3]
    out.append((*first[:5], first[5] + 100.0, offset + 1))  # redelivered key, other value: the first one wins
    return pl.DataFrame(out, schema=["tenant_id", "site_id", "device_id", "quantity", "ts_ms", "value", "src_offset"],
                        orient="row")  # fmt: skip


def _store(db: Database, rows: pl.DataFrame) -> None:
    n = rows.height
    table = pa.table({
        "tenant_id": rows["tenant_id"].to_list(), "site_id": rows["site_id"].to_list(), "branch": [""] * n,
        "device_id": rows["device_id"].to_list(), "quantity": rows["quantity"].to_list(),
        "ts": [dt.datetime.fromtimestamp(t / 1000, dt.UTC) for t in rows["ts_ms"]], "value": rows["value"].to_list(),
        "flags": [0] * n, "quality": [0] * n, "gateway_id": [""] * n, "src_topic": ["t.meter.readings"] * n,
        "src_partition": [0] * n, "src_offset": rows["src_offset"].to_list()}, schema=READINGS)  # fmt: skip
    db.insert_arrow("readings_store", table)
    for device, (site, tz) in ZONES.items():
        if tz is not None:
            db.command(f"INSERT INTO {db.table('device_registry_store')} (tenant_id, site_id, subject_id, "
                       f"subject_type, kind, timezone, deleted, version, updated_at) VALUES ('t1', '{site}', "
                       f"'{device}', 'device', 'electricity_meter', '{tz}', 0, 1, now64(3))")  # fmt: skip


def _view(db: Database, period: str, level: str) -> pl.DataFrame:
    keys = LEVEL_KEYS[level]
    grain = "toInt64(toUnixTimestamp(hour)) AS hour" if period == "hour" else "toString(day) AS day"
    _, rows = db.query_rows(f"SELECT {', '.join(keys)}, quantity, {grain}, min, avg, max, n "
                            f"FROM {db.table(f'instant_{period}ly_{level}'.replace('dayly', 'daily'))}")  # fmt: skip
    return pl.DataFrame(rows, schema=[*keys, "quantity", period, "min", "avg", "max", "n"], orient="row")


def _reference(rows: pl.DataFrame, period: str, level: str) -> pl.DataFrame:
    zones = {d: tz for d, (_, tz) in ZONES.items()}
    readings = (rows.filter(pl.col("quantity").is_in(instantaneous_codes(load_catalogue()))).sort("src_offset")
                .with_columns(timezone=pl.col("device_id").replace_strict(zones, return_dtype=pl.Utf8)))  # fmt: skip
    out = instantaneous_rollup(readings, period=period, level=level)  # type: ignore[arg-type]
    if period == "hour":
        return out.with_columns(pl.col("hour").dt.epoch("s"))
    return out.with_columns(pl.col("day").cast(pl.Utf8))


@pytest.mark.parametrize("period", ["hour", "day"])
def test_instant_views_equal_the_reference(database: Database, period: str) -> None:
    rows = _rows()
    _store(database, rows)
    for level, keys in LEVEL_KEYS.items():
        on = [*keys, "quantity", period]
        got, want = _view(database, period, level), _reference(rows, period, level)
        joined = want.join(got, on=on, how="full", suffix="_view", coalesce=True)
        assert joined.height == got.height == want.height >= 9, level
        assert (joined["n"] == joined["n_view"]).all(), level
        for col in ("min", "avg", "max"):
            assert (joined[col] - joined[f"{col}_view"]).abs().max() < 1e-9, (level, col)  # type: ignore[operator]
    if period == "day":  # local days follow the zone: 40 hours from noon UTC touch 3 UTC days, 2 in New York
        days: dict[Any, Any] = dict(_view(database, "day", "device").group_by("device_id").agg(pl.col("day").n_unique())
                                    .iter_rows())  # fmt: skip
        assert days["d-none"] == 3 and days["d-ny"] == 2


def test_the_view_lists_every_instantaneous_code_of_the_catalogue() -> None:
    sql = (sql_dir() / "010_instant_and_fuel.sql").read_text(encoding="utf-8")
    listed = re.search(r"WHERE quantity IN \(([^)]*)\)", sql)
    assert listed is not None
    assert sorted(re.findall(r"'([a-z0-9_]+)'", listed.group(1))) == instantaneous_codes(load_catalogue())
