"""Tariffs: parsing and validation of the registry's tariff JSON, cost of intervals."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from pipeline.derive.tariffs import TariffError, cost_by_device, cost_of_intervals, parse_tariff

TWO_BAND = {"currency": "EUR", "default_rate": 0.20, "bands": [
    {"days": "mon-fri", "from": "07:00", "to": "21:00", "rate": 0.30},   # weekday day
    {"days": "all", "from": "21:00", "to": "07:00", "rate": 0.12}]}  # every night, crosses midnight  # fmt: skip


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def frame(rows):
    return pl.DataFrame(rows, schema={"interval_start_ms": pl.Int64, "measured": pl.Float64, "estimated": pl.Float64},
                        orient="row")  # fmt: skip


def test_two_band_time_of_use_matches_a_hand_computed_example():
    # Europe/Berlin in January is UTC+1. Interval (UTC) -> local time -> band -> kWh x rate:
    rows = [
        (ms(2026, 1, 9, 19, 45), 2000.0, 0.0),  # Fri 20:45 weekday day 0.30 x 2.0 kWh            = 0.60
        (ms(2026, 1, 9, 20, 0), 1500.0, 500.0),  # Fri 21:00 night 0.12 x (1.5 + 0.5 estimated) kWh = 0.24
        (ms(2026, 1, 10, 5, 45), 1000.0, 0.0),  # Sat 06:45 Friday's night band until 07:00 0.12  = 0.12
        (ms(2026, 1, 10, 6, 0), 1000.0, 0.0),  # Sat 07:00 weekend day: no band, default 0.20     = 0.20
        (ms(2026, 1, 11, 22, 45), 500.0, 0.0),  # Sun 23:45 night 0.12 x 0.5 kWh                  = 0.06
        (ms(2026, 1, 12, 6, 0), 4000.0, 0.0),  # Mon 07:00 weekday day 0.30 x 4.0 kWh            = 1.20
        # Europe/Berlin in July is UTC+2 (DST):
        (ms(2026, 7, 3, 4, 45), 1000.0, 0.0),  # Fri 06:45 night 0.12                              = 0.12
        (ms(2026, 7, 3, 5, 0), 1000.0, 0.0),  # Fri 07:00 weekday day 0.30                        = 0.30
    ]  # total 2.84 EUR
    out = cost_of_intervals(frame(rows), TWO_BAND, "Europe/Berlin")
    assert out["rate"].to_list() == pytest.approx([0.30, 0.12, 0.12, 0.20, 0.12, 0.30, 0.12, 0.30])
    assert out["cost"].to_list() == pytest.approx([0.60, 0.24, 0.12, 0.20, 0.06, 1.20, 0.12, 0.30])
    assert out["cost"].sum() == pytest.approx(2.84)
    assert out["currency"].unique().to_list() == ["EUR"]


def test_band_edge_inside_an_interval_and_half_hour_offsets():
    tariff = {"currency": "INR", "default_rate": 6.0,
              "bands": [{"days": "mon-sat", "from": "09:10", "to": "12:00", "rate": 9.0}]}  # fmt: skip
    # Asia/Kolkata is UTC+5:30: 03:30 UTC = Thu 09:00 local; 10 min at 6.0 and 5 min at 9.0 -> 7.0 per kWh
    out = cost_of_intervals(frame([(ms(2026, 1, 1, 3, 30), 3000.0, 0.0), (ms(2026, 1, 1, 3, 45), 1000.0, 0.0)]),
                            tariff, "Asia/Kolkata")  # fmt: skip
    assert out["rate"].to_list() == pytest.approx([7.0, 9.0])
    assert out["cost"].to_list() == pytest.approx([21.0, 9.0])


def test_flat_tariff_and_cost_by_device():
    iv = frame([(ms(2026, 1, 1, 0, 0), 1000.0, 250.0)] * 3).with_columns(
        device_id=pl.Series(["a", "b", "a"]), quantity=pl.Series(["active_energy_import", "active_energy_import",
                                                                  "water_volume"]))  # fmt: skip
    out = cost_by_device(iv, {"a": ('{"currency":"EUR","rate":0.28}', "Europe/Berlin"), "b": (None, "UTC")})
    # a: 1.25 kWh x 0.28 EUR; b has no tariff; water is not priced
    assert out["cost"][0] == pytest.approx(0.35) and out["cost"][1:].is_null().all()
    assert out["currency"].to_list() == ["EUR", None, None]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("not json", "not valid JSON"),
        ({"currency": "eur", "rate": 0.2}, "3-letter"),
        ({"currency": "EUR", "rate": -0.2}, ">= 0"),
        ({"currency": "EUR", "rate": 0.2, "bands": []}, "both"),
        ({"currency": "EUR"}, "needs 'rate'"),
        (
            {"currency": "EUR", "bands": [{"days": "mon-fri", "from": "09:00", "to": "18:00", "rate": 1}]},
            "mon 00:00 uncovered",
        ),
        (
            {
                "currency": "EUR",
                "default_rate": 1,
                "bands": [
                    {"days": "mon-fri", "from": "09:00", "to": "18:00", "rate": 1},
                    {"days": "fri", "from": "17:00", "to": "19:00", "rate": 2},
                ],
            },
            "band 2 overlaps band 1 at fri 17:00",
        ),
        (
            {
                "currency": "EUR",
                "default_rate": 1,
                "bands": [
                    {"days": "sun", "from": "23:00", "to": "01:00", "rate": 1},
                    {"days": "mon", "from": "00:30", "to": "02:00", "rate": 2},
                ],
            },
            "band 2 overlaps band 1 at mon 00:30",
        ),
        (
            {
                "currency": "EUR",
                "default_rate": 1,
                "bands": [{"days": "funday", "from": "09:00", "to": "18:00", "rate": 1}],
            },
            "days must be",
        ),
        (
            {"currency": "EUR", "default_rate": 1, "bands": [{"days": "mon", "from": "9", "to": "18:00", "rate": 1}]},
            "HH:MM",
        ),
        (
            {
                "currency": "EUR",
                "default_rate": 1,
                "bands": [{"days": "mon", "from": "09:00", "to": "09:00", "rate": 1}],
            },
            "empty time range",
        ),
    ],
)
def test_invalid_tariffs_are_rejected_with_clear_errors(doc, message):
    with pytest.raises(TariffError, match=message):
        parse_tariff(doc)


def test_day_sets_and_full_week_coverage():
    t = parse_tariff(
        {
            "currency": "EUR",
            "bands": [
                {"days": "weekdays", "from": "00:00", "to": "24:00", "rate": 1},
                {"days": ["sat", "sun"], "from": "00:00", "to": "24:00", "rate": 2},
            ],
        }
    )
    assert t.minute_rates[0] == 1 and t.minute_rates[5 * 1440] == 2 and t.minute_rates[-1] == 2
    wrap = parse_tariff({"currency": "EUR", "default_rate": 0, "bands": [
        {"days": "fri-mon", "from": "12:00", "to": "13:00", "rate": 5}]})  # fmt: skip
    assert [wrap.minute_rates[d * 1440 + 720] for d in range(7)] == [5, 0, 0, 0, 5, 5, 5]
