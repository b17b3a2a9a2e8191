"""Schemas, the catalogue and SQL are found from a non-editable install, not only from a checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_carries_schemas_and_sql_and_finds_them(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(tmp_path.glob("telemetry_pipeline-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "pipeline/_resources/schemas/MeterReading.avsc",
        "pipeline/_resources/schemas/quantities.toml",
        "pipeline/_resources/sql/001_database.sql",
    ):
        assert required in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = (
        "from pipeline.resources import schemas_dir, sql_dir; from pipeline.catalogue import load_catalogue;"
        "from pipeline.storage.migrate import load_migrations;"
        "print(schemas_dir()); print(sql_dir()); print(len(load_catalogue().quantities), len(load_migrations()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={"PYTHONPATH": str(site)},
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout.splitlines()
    assert out[0] == str(site / "pipeline" / "_resources" / "schemas")
    assert out[1] == str(site / "pipeline" / "_resources" / "sql")
    assert int(out[2].split()[0]) > 20 and int(out[2].split()[1]) >= 6
