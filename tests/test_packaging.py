"""The installed distribution carries every package and data file the broker needs."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_is_included_in_the_distribution() -> None:
    """Each directory with an __init__.py under the three packages matches the find patterns."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["packages"]["find"]["include"]
    for top in ("broker_core", "storage", "transports"):
        for init in (ROOT / top).rglob("__init__.py"):
            package = ".".join(init.parent.relative_to(ROOT).parts)
            assert any(fnmatch.fnmatch(package, p) for p in patterns), package


def test_data_files_are_declared() -> None:
    """SQL schemas and the dashboard's static files are package data."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    data = config["tool"]["setuptools"]["package-data"]
    schemas = list((ROOT / "storage").rglob("*.sql"))
    assert schemas
    for schema in schemas:
        package = ".".join(schema.parent.relative_to(ROOT).parts)
        assert any(fnmatch.fnmatch(schema.name, p) for p in data.get(package, [])), schema
    assert "static/**/*" in data["transports"]
    assert list((ROOT / "transports" / "static").rglob("index.html"))
