"""Countries the simulated tenants live in and the cellular identifiers of their SIMs.

Identifiers follow domain/identifiers.md: ICCID ``89`` + country code + issuer +
account + Luhn digit (19 or 20 digits), IMSI = MCC + MNC + MSIN (15 digits, MCC/MNC
from ``schemas/mnc.csv``), MSISDN in E.164, IMEI = TAC + serial + Luhn digit.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["COUNTRIES", "TENANTS", "Country", "Sim", "luhn_digit", "make_imei", "make_sim"]


@dataclass(frozen=True)
class Country:
    iso: str
    timezone: str
    dial: str  # E.164 country code, also the ICCID country part
    mcc: str
    mncs: tuple[str, ...]
    mobile_prefixes: tuple[str, ...]
    national_len: int  # digits of the national mobile number
    cities: tuple[tuple[str, float, float], ...]
    currency: str
    roaming: tuple[str, str]  # a neighbouring network (MCC, MNC)
    rat: str
    hot: bool  # HVAC cools all year, gas only for cooking


COUNTRIES: dict[str, Country] = {
    c.iso: c
    for c in (
        Country("IN", "Asia/Kolkata", "91", "404", ("10", "45", "90"), ("98", "99", "70", "88"), 10,
                (("Bengaluru", 12.97, 77.59), ("Pune", 18.52, 73.86), ("Chennai", 13.08, 80.27),
                 ("Hyderabad", 17.39, 78.49), ("Mumbai", 19.08, 72.88), ("Ahmedabad", 23.02, 72.57)),
                "INR", ("413", "02"), "LTE-M", True),
        Country("AT", "Europe/Vienna", "43", "232", ("01", "03", "05"), ("664", "676", "699"), 10,
                (("Wien", 48.21, 16.37), ("Graz", 47.07, 15.44), ("Linz", 48.31, 14.29),
                 ("Salzburg", 47.81, 13.04), ("Innsbruck", 47.27, 11.40)),
                "EUR", ("228", "01"), "LTE-M", False),
        Country("DE", "Europe/Berlin", "49", "262", ("01", "02", "03"), ("151", "160", "176"), 11,
                (("Berlin", 52.52, 13.40), ("Hamburg", 53.55, 9.99), ("Muenchen", 48.14, 11.58),
                 ("Koeln", 50.94, 6.96), ("Leipzig", 51.34, 12.37)),
                "EUR", ("208", "01"), "NB-IoT", False),
        Country("NL", "Europe/Amsterdam", "31", "204", ("08", "04", "16"), ("6",), 9,
                (("Amsterdam", 52.37, 4.90), ("Rotterdam", 51.92, 4.48), ("Utrecht", 52.09, 5.12),
                 ("Eindhoven", 51.44, 5.47)),
                "EUR", ("206", "01"), "LTE-M", False),
        Country("ES", "Europe/Madrid", "34", "214", ("01", "03", "07"), ("6",), 9,
                (("Madrid", 40.42, -3.70), ("Barcelona", 41.39, 2.17), ("Valencia", 39.47, -0.38),
                 ("Sevilla", 37.39, -5.98)),
                "EUR", ("208", "10"), "LTE-M", True),
        Country("GB", "Europe/London", "44", "234", ("15", "30", "10"), ("7",), 10,
                (("London", 51.51, -0.13), ("Manchester", 53.48, -2.24), ("Birmingham", 52.49, -1.89),
                 ("Leeds", 53.80, -1.55)),
                "GBP", ("208", "20"), "LTE-M", False),
        Country("SE", "Europe/Stockholm", "46", "240", ("01", "07"), ("70", "72", "73"), 9,
                (("Stockholm", 59.33, 18.07), ("Goeteborg", 57.71, 11.97), ("Malmoe", 55.60, 13.00),
                 ("Uppsala", 59.86, 17.64)),
                "SEK", ("242", "01"), "NB-IoT", False),
        Country("PL", "Europe/Warsaw", "48", "260", ("01", "02", "03"), ("5", "6", "7"), 9,
                (("Warszawa", 52.23, 21.01), ("Krakow", 50.06, 19.94), ("Gdansk", 54.35, 18.65),
                 ("Wroclaw", 51.11, 17.03)),
                "PLN", ("262", "01"), "LTE-M", False),
        Country("IT", "Europe/Rome", "39", "222", ("01", "10", "88"), ("3",), 10,
                (("Milano", 45.46, 9.19), ("Roma", 41.90, 12.50), ("Torino", 45.07, 7.69),
                 ("Bologna", 44.49, 11.34)),
                "EUR", ("228", "01"), "LTE-M", True),
    )
}  # fmt: skip

# tenant id and country, in the order tenants are created
TENANTS: tuple[tuple[str, str], ...] = (
    ("acme-energy", "IN"), ("alpen-strom", "AT"), ("spree-facilities", "DE"),
    ("polder-utilities", "NL"), ("iberia-grid", "ES"), ("thames-metering", "GB"),
    ("deccan-power", "IN"), ("nordic-heat", "SE"), ("vistula-energy", "PL"), ("lago-servizi", "IT"),
)  # fmt: skip

_TACS = ("35316511", "86691504", "86743303", "35840709", "86111505")


@dataclass(frozen=True)
class Sim:
    iccid: str
    imsi: str
    msisdn: str
    imei: str
    mcc: str
    mnc: str
    rat: str
    plan_id: str
    plan_allowance_bytes: int
    plan_cycle_start_day: int


def luhn_digit(payload: str) -> str:
    """The check digit that makes ``payload + digit`` pass the Luhn check."""
    total = 0
    for i, ch in enumerate(reversed(payload)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str(-total % 10)


def _digits(rng: random.Random, n: int) -> str:
    return "".join(str(rng.randrange(10)) for _ in range(n))


def make_imei(rng: random.Random) -> str:
    payload = rng.choice(_TACS) + _digits(rng, 6)
    return payload + luhn_digit(payload)


def make_sim(rng: random.Random, country: Country, issuer: str, *, bad_luhn: bool = False) -> Sim:
    """A SIM of ``country``; ``bad_luhn`` gives an ICCID whose check digit is wrong (flag, not reject)."""
    length = 19 if country.iso == "IN" else 20
    payload = "89" + country.dial + issuer
    payload += _digits(rng, length - 1 - len(payload))
    check = luhn_digit(payload)
    if bad_luhn:
        check = str((int(check) + 1 + rng.randrange(9)) % 10)
    mnc = rng.choice(country.mncs)
    imsi = country.mcc + mnc + _digits(rng, 15 - len(country.mcc) - len(mnc))
    prefix = rng.choice(country.mobile_prefixes)
    msisdn = "+" + country.dial + prefix + _digits(rng, country.national_len - len(prefix))
    allowance = rng.choice((100, 250, 500)) * 1_000_000
    return Sim(
        iccid=payload + check, imsi=imsi, msisdn=msisdn, imei=make_imei(rng), mcc=country.mcc,
        mnc=mnc, rat=country.rat, plan_id=f"{country.iso.lower()}-iot-{allowance // 1_000_000}mb",
        plan_allowance_bytes=allowance, plan_cycle_start_day=rng.choice((1, 1, 15)),
    )  # fmt: skip
