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


def _build_wheel(tmp_path: Path) -> Path:
    """A wheel built from a copy of the sources (the checkout stays clean)."""
    import shutil
    import subprocess
    import sys

    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for top in ("broker_core", "storage", "transports"):
        shutil.copytree(ROOT / top, source / top, ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path / "dist"
    subprocess.run(
        # As `pip install .` does: the build backend (setuptools) in an isolated env.
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    [wheel] = dist.glob("wsbroker-*.whl")
    return wheel


def test_the_wheel_installs_three_packages_and_a_working_command(tmp_path: Path) -> None:
    """Only broker_core, storage and transports at top level; ``broker`` and ``python -m
    transports`` run from the installed wheel and print its version."""
    import subprocess
    import sys
    import zipfile

    from transports import VERSION

    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"broker_core", "storage", "transports", f"wsbroker-{VERSION}.dist-info"}
    for data in (
        "transports/static/dashboard/index.html",
        "transports/static/docs/swagger.html",
        "transports/static/docs/vendor/swagger-ui/swagger-ui-bundle.js",
        "transports/static/docs/vendor/swagger-ui/LICENSE",
        "transports/static/docs/vendor/graphiql/graphiql.min.js",
        "transports/static/docs/vendor/graphiql/LICENSE",
        "transports/static/docs/vendor/react/LICENSE",
        "storage/sqlite/schema.sql",
        "transports/py.typed",
    ):
        assert data in names, data
    target = tmp_path / "installed"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
         str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    # The installed copy comes first on the path; the checkout is not the working directory.
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(target), "HOME": str(tmp_path)}
    where = subprocess.run(
        [sys.executable, "-c", "import transports; print(transports.__file__)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert where.stdout.startswith(str(target)), where.stdout
    for command in ([str(target / "bin" / "broker")], [sys.executable, "-m", "transports"]):
        run = subprocess.run(
            [*command, "--version"], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == f"broker (wsbroker) {VERSION}", command
