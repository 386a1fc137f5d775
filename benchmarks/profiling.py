"""Where the broker's CPU goes: py-spy on the broker process during a phase.

`recording` attaches ``py-spy record`` (speedscope format, ``--function``:
samples grouped by function, ``--nonblocking``: the broker is not paused)
to a running process and stops it with SIGINT when the phase ends;
`summarise` turns the samples into, for the event-loop thread (which
bounds throughput) and for the SQLite writer thread (``sqlite-writer``, its
group commits) separately; aiosqlite's read thread counts as ``sqlite_reads``
and the WAL checkpointer as ``sqlite_checkpoints``:

* how busy it was (% of the wall time);
* self time: the function on top of the stack (where CPU is spent);
* inclusive time of our functions (``broker_core``, ``storage``,
  ``transports``): the function anywhere on the stack;
* self time by package (our packages, each library, the stdlib module).

Idle samples (a thread waiting in ``epoll`` or on a lock) are not recorded
by py-spy, so the shares are of busy time. C code (uvloop, msgspec, the
sqlite3 module, socket calls) has no frame of its own without ``--native``
(which pauses the process and cut throughput by two thirds here): its time
is the self time of the Python function that called it. The speedscope file is kept for
https://www.speedscope.app/.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["OURS", "Recording", "py_spy", "recording", "summarise"]

OURS = ("broker_core", "storage", "transports")
_ENTRY = ("transports/__main__.py", "transports/cli.py", "transports/server.py")
"""Our frames at the bottom of every stack (100% inclusive, nothing to learn)."""
_NATIVE = {
    "Runner.run": ("uvloop, sockets (C)", "C below it: uvloop's loop, socket reads and writes"),
    "_connection_worker_thread": ("sqlite (C)", "C below it: SQLite running the reads"),
    "SQLiteWriter._main": ("sqlite (C)", "C below it: SQLite running the statements"),
}
"""Without ``--native`` C time counts as the nearest Python frame's own: name what it is."""
_ROOT = str(Path(__file__).resolve().parent.parent) + "/"
_STDLIB = sysconfig.get_paths()["stdlib"] + "/"


def py_spy() -> str | None:
    """The py-spy executable (next to this Python, else on PATH), or None."""
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


class Recording:
    """A py-spy recording in progress; after the context, how long it ran."""

    def __init__(self, output: Path, rate: int) -> None:
        self.output = output
        self.rate = rate
        self.seconds = 0.0


@contextlib.contextmanager
def recording(pid: int, output: Path, rate: int = 250) -> Iterator[Recording]:
    """Record ``pid`` with py-spy while the context is open; the profile lands in ``output``.

    Raises:
        RuntimeError: py-spy is missing, or failed (its message says why).
    """
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy is not installed (pip install -e '.[bench]')")
    output.parent.mkdir(parents=True, exist_ok=True)
    argv = [exe, "record", "--pid", str(pid), "--format", "speedscope", "--output", str(output)]
    argv += ["--rate", str(rate), "--nonblocking", "--full-filenames", "--function"]
    record = Recording(output, rate)
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    started = time.monotonic()
    try:
        yield record
    finally:
        record.seconds = time.monotonic() - started
        process.send_signal(signal.SIGINT)
        try:
            _, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
    if not output.exists():
        raise RuntimeError(f"py-spy wrote no profile: {err.decode(errors='replace')[-500:]}")


def _where(path: str) -> tuple[str, str]:
    """A frame's short file name and its package."""
    if "site-packages/" in path:
        short = path.split("site-packages/", 1)[1]
    elif path.startswith(_ROOT):
        short = path[len(_ROOT) :]
    elif path.startswith(_STDLIB):
        short = path[len(_STDLIB) :]
    else:
        short = path
    top = short.split("/", 1)[0].removesuffix(".py")
    return short, top


def _ours(label: str) -> bool:
    where = label.rsplit("(", 1)[-1]
    return where.startswith(OURS) and not where.startswith(_ENTRY)


def _shares(counter: Counter[str], total: int, top: int, keep: Any = None) -> list[dict[str, Any]]:
    rows = [(name, n) for name, n in counter.most_common() if keep is None or keep(name)]
    return [{"frame": name, "percent": round(100 * n / max(1, total), 1)} for name, n in rows[:top]]


def _thread_kind(name: str) -> str:
    if "sqlite-writer" in name:
        return "sqlite"
    if "sqlite-checkpointer" in name:
        return "sqlite_checkpoints"
    if "_connection_worker_thread" in name:
        return "sqlite_reads"
    return "loop"


def summarise(
    record: Recording, busy_seconds: float | None = None, top: int = 15
) -> dict[str, Any]:
    """Where a recording's samples fell, per thread kind.

    The event loop (the main thread, plus uvloop's small helper thread) is
    what limits throughput: its busy share of the wall time, its self time
    by function and by package, and the inclusive time of our functions,
    all in % of its samples. The SQLite writer thread commits beside it
    (partly without the GIL): its busy share and its top frames. Busy shares
    are of ``busy_seconds`` (the phase's traffic, without its clients'
    start-up) when given, else of the whole recording.
    """
    document = json.loads(record.output.read_text())
    labels: list[str] = []
    packages: list[str] = []
    for frame in document["shared"]["frames"]:
        short, package = _where(frame.get("file") or "?")
        native = _NATIVE.get(frame["name"])
        if native is None:
            labels.append(f"{frame['name']} ({short})")
            packages.append(package)
        else:
            labels.append(f"{frame['name']} ({short}) [{native[1]}]")
            packages.append(native[0])
    kinds: dict[str, dict[str, Any]] = {}
    for profile in document["profiles"]:
        kind = _thread_kind(profile["name"])
        counts = kinds.setdefault(
            kind, {"samples": 0, "self": Counter(), "inclusive": Counter(), "packages": Counter()}
        )
        for sample in profile["samples"]:  # each root first
            if not sample:
                continue
            counts["samples"] += 1
            leaf = sample[-1]
            counts["self"][labels[leaf]] += 1
            counts["packages"][packages[leaf]] += 1
            for label in {labels[index] for index in sample}:
                counts["inclusive"][label] += 1
    seconds = record.seconds if busy_seconds is None else busy_seconds
    possible = max(1.0, seconds * record.rate)
    out: dict[str, Any] = {"seconds": round(seconds, 2), "rate": record.rate}
    for kind, counts in kinds.items():
        n = counts["samples"]
        out[kind] = {
            "samples": n,
            "busy_percent": min(100.0, round(100 * n / possible, 1)),
            "self": _shares(counts["self"], n, top),
            "self_by_package": _shares(counts["packages"], n, top),
            "inclusive_ours": _shares(counts["inclusive"], n, top, _ours),
            "self_ours_percent": round(
                100 * sum(v for k, v in counts["packages"].items() if k in OURS) / max(1, n), 1
            ),
        }
    return out
