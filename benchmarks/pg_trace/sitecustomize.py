"""Counts a broker node's PostgreSQL statements (benchmarks only; see `benchmarks.pg_statements`).

Put this directory first on ``PYTHONPATH`` and set ``BENCH_PG_TRACE`` to a
file prefix: Python imports this module at start, and it wraps asyncpg's
``Connection`` methods so every statement the node sends is counted by its
SQL's first words (``executemany`` counts one per row: the server runs the
statement once per row). The counts are written to ``<prefix>.<pid>.json``
every 0.2 s, so the benchmark reads them before and after a phase.
"""

from __future__ import annotations

import os

_PREFIX = os.environ.get("BENCH_PG_TRACE")

if _PREFIX:
    import json
    import threading
    import time

    _counts: dict[str, int] = {}

    def _key(sql: object) -> str:
        text = " ".join(str(sql).split())
        return text[:90]

    def _wrap(cls: type, name: str, per_row: bool) -> None:
        original = getattr(cls, name)

        async def counted(self: object, query: object, *args: object, **kwargs: object) -> object:
            key = _key(query)
            rows = len(args[0]) if per_row and args else 1  # type: ignore[arg-type]
            _counts[key] = _counts.get(key, 0) + rows
            _counts["_calls"] = _counts.get("_calls", 0) + 1
            return await original(self, query, *args, **kwargs)

        setattr(cls, name, counted)

    def _install() -> None:
        try:
            from asyncpg import connection
        except ImportError:
            return
        cls = connection.Connection
        for name in ("execute", "fetch", "fetchval", "fetchrow"):
            _wrap(cls, name, per_row=False)
        _wrap(cls, "executemany", per_row=True)

    def _dump() -> None:
        path = f"{_PREFIX}.{os.getpid()}.json"
        while True:
            time.sleep(0.2)
            try:
                data = json.dumps(dict(_counts))
                with open(path + ".tmp", "w") as out:
                    out.write(data)
                os.replace(path + ".tmp", path)
            except (OSError, RuntimeError):
                pass

    _install()
    threading.Thread(target=_dump, name="pg-trace", daemon=True).start()
