"""Per-meter decryption keys (GUEK, optional authentication key AK).

Key file, TOML (``*.toml``) or JSON (any other suffix), one entry per meter::

    # keys.toml
    [[meter]]
    system_title = "4B464D1010000023"          # 16 hex digits, any case
    guek = "101112131415161718191A1B1C1D1E1F"  # 32 hex digits (AES-128)
    ak   = "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"  # optional: frames with SC bit 4 need it

    [[meter]]
    meter_number = "1KFM0100000035"            # when the system title is not known
    guek = "..."

JSON: ``{"meter": [{"system_title": "...", "guek": "...", "ak": "..."}]}``.
Each entry needs ``guek`` and at least one of ``system_title`` / ``meter_number``.

An entry known only by meter number is a *candidate* for every system title that
has no entry of its own: the decoder tries it and keeps it only if the frame
decrypts, parses and carries that meter number (0-0:96.1.0).

Key bytes never appear in a repr, a str or an error message: errors name the
entry's position and field only.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError


@dataclass(frozen=True, slots=True, repr=False)
class KeyEntry:
    encryption_key: bytes = field(repr=False)
    authentication_key: bytes | None = field(default=None, repr=False)
    system_title: str | None = None  # upper-case hex
    meter_number: str | None = None

    def __post_init__(self) -> None:
        if len(self.encryption_key) != 16 or (
            self.authentication_key is not None and len(self.authentication_key) != 16
        ):
            raise ConfigError("AES-128 keys must be 16 bytes")

    def __repr__(self) -> str:
        auth = "with AK" if self.authentication_key else "no AK"
        return f"KeyEntry(system_title={self.system_title!r}, meter_number={self.meter_number!r}, {auth})"

    __str__ = __repr__


def _key_bytes(value: object, where: str) -> bytes:
    if isinstance(value, bytes | bytearray) and len(value) == 16:
        return bytes(value)
    if isinstance(value, str) and len(value) == 32:
        try:
            return bytes.fromhex(value)
        except ValueError:
            pass
    raise ConfigError(f"{where} must be 16 bytes or 32 hex digits")  # never echo the value


def _title(value: object, where: str) -> str:
    raw = value.hex() if isinstance(value, bytes) else value
    if isinstance(raw, str) and len(raw) == 16:
        try:
            return bytes.fromhex(raw).hex().upper()
        except ValueError:
            pass
    raise ConfigError(f"{where} must be 8 bytes or 16 hex digits")


class KeyStore:
    def __init__(self, entries: Iterable[KeyEntry] = ()) -> None:
        self._by_title: dict[str, KeyEntry] = {}
        self._by_meter: dict[str, KeyEntry] = {}
        for e in entries:
            self._put(e)

    @classmethod
    def from_file(cls, path: str | Path) -> KeyStore:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
            data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read key file {path}: {type(exc).__name__}") from None
        except (tomllib.TOMLDecodeError, json.JSONDecodeError):
            raise ConfigError(f"key file {path} is not valid TOML/JSON") from None
        return cls.from_mapping(data, source=str(path))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "keys") -> KeyStore:
        meters = data.get("meter") if isinstance(data, Mapping) else None
        if not isinstance(meters, list):
            raise ConfigError(f"{source}: expected a list 'meter' of entries")
        store = cls()
        for n, m in enumerate(meters):
            if not isinstance(m, Mapping):
                raise ConfigError(f"{source}: meter entry {n} is not a table")
            store.add(
                m.get("guek"),
                authentication_key=m.get("ak"),
                system_title=m.get("system_title"),
                meter_number=m.get("meter_number"),
                where=f"{source}: meter entry {n}",
            )
        return store

    def add(
        self,
        encryption_key: bytes | str | None,
        *,
        authentication_key: bytes | str | None = None,
        system_title: bytes | str | None = None,
        meter_number: str | None = None,
        where: str = "key",
    ) -> KeyEntry:
        """Add or replace the entry for a system title and/or meter number."""
        if system_title is None and not meter_number:
            raise ConfigError(f"{where}: needs a system_title or a meter_number")
        entry = KeyEntry(
            encryption_key=_key_bytes(encryption_key, f"{where}: guek"),
            authentication_key=None if authentication_key is None else _key_bytes(authentication_key, f"{where}: ak"),
            system_title=None if system_title is None else _title(system_title, f"{where}: system_title"),
            meter_number=str(meter_number) if meter_number else None,
        )
        self._put(entry)
        return entry

    def _put(self, entry: KeyEntry) -> None:
        if entry.system_title:
            self._by_title[entry.system_title] = entry
        if entry.meter_number:
            self._by_meter[entry.meter_number] = entry

    def by_system_title(self, system_title_hex: str) -> KeyEntry | None:
        return self._by_title.get(system_title_hex.upper())

    def by_meter_number(self, meter_number: str) -> KeyEntry | None:
        return self._by_meter.get(meter_number)

    def unbound(self) -> tuple[KeyEntry, ...]:
        """Entries known by meter number only (candidates for unknown system titles)."""
        return tuple(e for e in self._by_meter.values() if e.system_title is None)

    def __len__(self) -> int:
        return len({id(e) for e in (*self._by_title.values(), *self._by_meter.values())})

    def __repr__(self) -> str:
        return f"KeyStore({len(self)} entries)"

    __str__ = __repr__
