"""`broker_core` stays free of transports and database drivers (design: "No HTTP here")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FORBIDDEN = ("litestar", "aiosqlite", "websockets", "strawberry", "asyncpg")
ROOT = Path(__file__).resolve().parents[2]

_PROBE = f"""
import importlib, json, pkgutil, sys
import broker_core
for module in pkgutil.iter_modules(broker_core.__path__):
    importlib.import_module("broker_core." + module.name)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {FORBIDDEN!r})))
"""


def test_importing_broker_core_loads_no_transport_or_driver() -> None:
    """Importing every broker_core module in a fresh interpreter imports none of them."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert json.loads(result.stdout) == []
