"""The stage's device, series and quantity numbers against a dict filled in order of first sight."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.anomaly.numbering import DID, QID, SID, Numbering, rows_of

_ROW = st.tuples(st.sampled_from(["t1", "t2"]), st.sampled_from(["d1", "d2", "d3", "d4"]),
                 st.sampled_from(["voltage_l1", "active_power", "water_volume"]))  # fmt: skip


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(_ROW, max_size=40), min_size=1, max_size=8))
def test_numbers_are_those_of_first_sight_and_stable_across_batches(batches: list[list[tuple[str, str, str]]]) -> None:
    """A device is (tenant, device): the same device id under two tenants is two devices. Rows of one
    device come adjacent or interleaved, in any order."""
    numbering = Numbering()
    devices: dict[tuple[str, str], int] = {}
    series: dict[tuple[str, str, str], int] = {}
    for rows in batches:
        frame = pl.DataFrame(rows, schema=["tenant_id", "device_id", "quantity"], orient="row")
        out = numbering(frame)
        assert out.select("tenant_id", "device_id", "quantity").equals(frame)
        for t, d, q in rows:
            devices.setdefault((t, d), len(devices))
            series.setdefault((t, d, q), len(series))
        assert out[DID].to_list() == [devices[(t, d)] for t, d, _ in rows]
        assert out[SID].to_list() == [series[r] for r in rows]
        assert out[QID].to_list() == [numbering.quantities[q] for _, _, q in rows]
    assert (numbering.devices, numbering.series) == (len(devices), len(series))


def test_rows_of_finds_a_batchs_readings_of_some_quantities() -> None:
    numbering = Numbering()
    numbering(pl.DataFrame({"tenant_id": ["t"], "device_id": ["d"], "quantity": ["gas_volume"]}))
    readings = pl.DataFrame({"tenant_id": ["t"] * 4, "device_id": ["d", "d", "e", "e"],
                             "quantity": ["voltage_l1", "active_power", "voltage_l1", "frequency"]})  # fmt: skip
    batch = numbering.batch(readings, pl.DataFrame(), pl.DataFrame())
    assert rows_of(batch, ["voltage_l1", "frequency"]).tolist() == [0, 2, 3]
    assert rows_of(batch, ["gas_volume", "power_factor"]).tolist() == []  # seen before / never seen
    assert batch.intervals.is_empty()


def test_more_quantities_than_the_table_is_wide_keep_their_numbers() -> None:
    numbering, want = Numbering(), {}
    for part in (range(0, 50), range(30, 90)):  # the series table starts 64 quantities wide
        rows = [("t", f"d{i % 3}", f"q{i}") for i in part]
        out = numbering(pl.DataFrame(rows, schema=["tenant_id", "device_id", "quantity"], orient="row"))
        assert out[SID].to_list() == [want.setdefault(r, len(want)) for r in rows]
