"""Locate the data folders (``schemas/``, ``sql/``) from a checkout or an installed wheel.

A non-editable install carries them inside the package as ``pipeline/_resources/``
(see ``pyproject.toml``); a checkout has them at the repository root.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


@cache
def resource_dir(name: str) -> Path:
    """Return the folder ``name`` (``"schemas"`` or ``"sql"``), installed copy first."""
    for candidate in (_PACKAGE_DIR / "_resources" / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"resource folder {name!r} not found next to {_PACKAGE_DIR}")


def schemas_dir() -> Path:
    return resource_dir("schemas")


def sql_dir() -> Path:
    return resource_dir("sql")
