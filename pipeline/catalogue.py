"""The quantity catalogue: codes, units, kinds, plausible ranges, register ceilings.

Loaded once from ``schemas/quantities.toml`` and passed to the stages that need
it (validation, storage, reports, DLMS OBIS mapping).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.resources import schemas_dir


class Kind(StrEnum):
    CUMULATIVE = "cumulative"
    INSTANTANEOUS = "instantaneous"
    LEVEL = "level"
    STATE = "state"


@dataclass(frozen=True, slots=True)
class Quantity:
    code: str
    unit: str
    kind: Kind
    min: float
    max: float
    ceiling: float | None
    obis: tuple[str, ...]
    aliases: tuple[str, ...]
    description: str


@dataclass(frozen=True)
class Catalogue:
    version: str
    quantities: dict[str, Quantity]

    def __contains__(self, code: object) -> bool:
        return code in self.quantities

    def __getitem__(self, code: str) -> Quantity:
        return self.quantities[code]

    def codes(self) -> list[str]:
        return sorted(self.quantities)

    def by_obis(self) -> dict[str, str]:
        """OBIS code (``A-B:C.D.E``) → catalogue code."""
        return {o: q.code for q in self.quantities.values() for o in q.obis}

    def by_alias(self) -> dict[str, str]:
        return {a: q.code for q in self.quantities.values() for a in q.aliases}

    def cumulative_codes(self) -> list[str]:
        return sorted(c for c, q in self.quantities.items() if q.kind is Kind.CUMULATIVE)


def load_catalogue(path: Path | None = None) -> Catalogue:
    """Parse and check the catalogue file; raise :class:`ConfigError` on any inconsistency."""
    path = path or schemas_dir() / "quantities.toml"
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read quantity catalogue {path}: {exc}") from exc
    quantities: dict[str, Quantity] = {}
    for code, spec in raw.get("quantity", {}).items():
        try:
            kind = Kind(spec["kind"])
            q = Quantity(
                code=code,
                unit=str(spec["unit"]),
                kind=kind,
                min=float(spec["min"]),
                max=float(spec["max"]),
                ceiling=float(spec["ceiling"]) if "ceiling" in spec else None,
                obis=tuple(spec.get("obis", ())),
                aliases=tuple(spec.get("aliases", ())),
                description=str(spec.get("description", "")),
            )
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"catalogue entry {code!r} is invalid: {exc}") from exc
        if q.min > q.max:
            raise ConfigError(f"catalogue entry {code!r}: min {q.min} > max {q.max}")
        if kind is Kind.CUMULATIVE and q.ceiling is None:
            raise ConfigError(f"catalogue entry {code!r}: cumulative quantities need a ceiling")
        quantities[code] = q
    if not quantities:
        raise ConfigError(f"catalogue {path} defines no quantities")
    return Catalogue(version=str(raw.get("version", "unversioned")), quantities=quantities)
