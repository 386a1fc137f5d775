"""Shared benchmark plumbing: the broker and the client workers as their own processes.

* `BrokerProcess`: ``python -m transports serve`` as users run it (TLS off, a
  fresh data dir, durable defaults) with the publish/consume rate limits
  off; it can be stopped and started again on the same data (restart times)
  and reports its RSS.
* `Workers`: client processes (``python -m benchmarks.worker``) started from
  a `Spec`, awaited for their JSON result, and always reaped, even when a
  phase fails.
* `save`: results as JSON with the machine's description and load.

Everything listens on 127.0.0.1 only, and every wait has a deadline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import msgspec
import psutil

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from .worker import Spec

__all__ = [
    "PASSWORD",
    "RESULTS",
    "BrokerProcess",
    "Worker",
    "WorkerError",
    "Workers",
    "attempt",
    "code_state",
    "cpu_seconds",
    "free_port",
    "listener_pid",
    "load_average",
    "machine",
    "positive_int",
    "raise_open_files",
    "reachable",
    "save",
    "say",
    "written_bytes",
]

T = TypeVar("T")

RESULTS = Path(__file__).resolve().parent / "results"
PASSWORD = "benchmark-admin-password"
MIB = 1024 * 1024

BENCH_ENV = {
    # A benchmark measures the broker, not its abuse limits (0 = unlimited).
    "BROKER_RATE_PUBLISH_PER_S": "0",
    "BROKER_RATE_CONSUME_PER_S": "0",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def reachable(port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on ``127.0.0.1:port``."""
    with socket.socket() as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(("127.0.0.1", port))
        except OSError:
            return False
    return True


def listener_pid(port: int) -> int | None:
    """The process listening on ``127.0.0.1:port`` (a peer's server), if it can be seen."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.Error:
        return None
    for connection in connections:
        address = connection.laddr
        if connection.status == psutil.CONN_LISTEN and address and address.port == port:
            return connection.pid
    return None


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds a process used so far (None if it can't be read)."""
    if pid is None:
        return None
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(times.user + times.system)


def written_bytes(pid: int | None) -> int | None:
    """Bytes a process caused to be written to storage so far (None if it can't be read)."""
    if pid is None:
        return None
    try:
        return int(psutil.Process(pid).io_counters().write_bytes)
    except (psutil.Error, AttributeError):  # no I/O counters on this platform
        return None


def positive_int(text: str) -> int:
    """An ``argparse`` type: an integer above zero."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def raise_open_files() -> int:
    """Raise this process's RLIMIT_NOFILE to its hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1_048_576)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (``/proc/loadavg``)."""
    return [round(value, 2) for value in os.getloadavg()]


def code_state() -> dict[str, Any]:
    """The commit measured, and the broker's files changed since (work in progress)."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "broker_core", "storage", "transports"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.splitlines()
    except OSError:
        return {}
    return {"commit": commit, "uncommitted": [line[3:] for line in status]}


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "memory_mb": round(psutil.virtual_memory().total / MIB),
    }


class BrokerProcess:
    """``python -m transports serve`` with TLS off and a fresh data dir, as users run it.

    Use it as a context manager; `stop` and `start` in between restart it on
    the same data. ``env`` adds or overrides ``BROKER_*`` settings.
    """

    def __init__(self, source: str | None = None, **env: str) -> None:
        self.port = free_port()
        # ``python -m`` puts the working directory first on sys.path: another
        # source tree (a before/after comparison) is run from there.
        self.source = source
        self._dir = tempfile.TemporaryDirectory(prefix="broker-bench-")
        self.data_dir = Path(self._dir.name) / "data"
        self.log = Path(self._dir.name) / "broker.log"
        self.env = {
            **os.environ,
            "BROKER_HOST": "127.0.0.1",
            "BROKER_PORT": str(self.port),
            "BROKER_DATA_DIR": str(self.data_dir),
            "BROKER_TLS": "false",
            "BROKER_ADMIN_PASSWORD": PASSWORD,
            "BROKER_LOG_LEVEL": "WARNING",
            **BENCH_ENV,
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self._token: str | None = None
        self._token_at = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None, "started"
        return self.process.pid

    def __enter__(self) -> BrokerProcess:
        try:
            self.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop()
        finally:
            self._dir.cleanup()

    def start(self, timeout: float = 60.0, poll: float = 0.01) -> float:
        """Start the broker; return the seconds until ``/health`` answered 200.

        Raises:
            TimeoutError: it did not answer within ``timeout``; its log tail is in the message.
        """
        assert self.process is None, "not running"
        started = time.monotonic()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "transports", "serve"],
                env=self.env if self.source is None else self.env | {"PYTHONPATH": self.source},
                cwd=self.source,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = started + timeout
        with httpx.Client(timeout=5.0) as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    break
                with contextlib.suppress(httpx.TransportError):
                    if http.get(f"{self.url}/health").status_code == 200:
                        return time.monotonic() - started
                time.sleep(poll)
        tail = self.log_tail()
        self.stop(kill=True)
        raise TimeoutError(f"broker did not start within {timeout:g} s:\n{tail}")

    def stop(self, *, kill: bool = False, timeout: float = 60.0) -> float:
        """Stop it (SIGTERM: a clean stop; ``kill``: SIGKILL); return the seconds it took."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return 0.0
        started = time.monotonic()
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        return time.monotonic() - started

    def rss(self) -> int:
        """The broker's resident set size in bytes."""
        return int(psutil.Process(self.pid).memory_info().rss)

    def peak_rss(self) -> int:
        """The broker's highest resident set size so far (``VmHWM``), in bytes."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return self.rss()

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the broker printed (for error messages)."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def token(self) -> str:
        """An admin access token, renewed after 10 of its 15 minutes.

        One login per 10 minutes at most: the password hash is slow on purpose.
        """
        if self._token is None or time.monotonic() - self._token_at > 600:
            response = httpx.post(
                f"{self.url}/auth/token",
                json={"username": "admin", "password": PASSWORD},
                timeout=30,
            )
            response.raise_for_status()
            self._token = str(response.json()["access_token"])
            self._token_at = time.monotonic()
        return self._token

    def _auth(self, request: httpx.Request) -> httpx.Request:
        request.headers["Authorization"] = f"Bearer {self.token()}"
        return request

    def http(self, timeout: float = 60.0) -> httpx.Client:
        """A REST client authenticated as the admin (close it after use)."""
        return httpx.Client(base_url=self.url, auth=self._auth, timeout=timeout)


class WorkerError(RuntimeError):
    """A client process failed, timed out or did not get ready."""


class Worker:
    """One client process running one `Spec`; made by `Workers.start`."""

    def __init__(self, spec: Spec, process: subprocess.Popen[bytes], log: Path) -> None:
        self.spec = spec
        self.process = process
        self.log = log

    def __repr__(self) -> str:
        return f"<Worker {self.spec.module}.{self.spec.role} pid={self.process.pid}>"

    def _tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])
        return ""

    def wait_ready(self, timeout: float) -> None:
        """Wait for the worker's ``ready`` line (a consumer that subscribed, a server listening).

        Raises:
            WorkerError: it exited or said nothing within ``timeout``.
        """
        stdout = self.process.stdout
        assert stdout is not None, "piped"
        deadline = time.monotonic() + timeout
        line = b""
        why = f"did not get ready in {timeout:g} s"
        while time.monotonic() < deadline:
            readable, _, _ = select.select([stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not readable:
                break
            chunk = os.read(stdout.fileno(), 1)
            if not chunk:
                self.process.wait(timeout=10)
                why = f"exited with code {self.process.returncode} before it was ready"
                break
            line += chunk
            if chunk == b"\n":
                if line.strip() == b"ready":
                    return
                line = b""
        self.process.kill()
        raise WorkerError(f"{self!r} {why}:\n{self._tail()}")

    def stop(self) -> None:
        """Tell an ``until_stop`` worker to finish (a line on its stdin)."""
        stdin = self.process.stdin
        if stdin is not None and not stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                stdin.write(b"stop\n")
                stdin.flush()

    def result(self, timeout: float | None = None) -> dict[str, Any]:
        """Wait for the worker to end and return its JSON result.

        Raises:
            WorkerError: it failed, or did not end within ``timeout`` (then it is killed).
        """
        timeout = self.spec.timeout + 30 if timeout is None else timeout
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            raise WorkerError(f"{self!r} did not end in {timeout:g} s:\n{self._tail()}") from None
        out = Path(self.spec.out)
        if self.process.returncode != 0 or not out.exists():
            raise WorkerError(
                f"{self!r} failed with exit code {self.process.returncode}:\n{self._tail()}"
            )
        result: dict[str, Any] = json.loads(out.read_text())
        return result


class Workers:
    """The client processes of one phase; the context's end kills any still running."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="broker-bench-workers-"))
        self._workers: list[Worker] = []
        self._count = 0

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        for worker in self._workers:
            if worker.process.poll() is None:
                worker.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(timeout=10)
            for stream in (worker.process.stdin, worker.process.stdout):
                if stream is not None:
                    stream.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def start(self, spec: Spec) -> Worker:
        """Start ``python -m benchmarks.worker`` on ``spec`` (its ``out`` is set here)."""
        self._count += 1
        name = f"{self._count:03d}-{spec.role}"
        spec = msgspec.structs.replace(spec, out=str(self._dir / f"{name}.json"))
        spec_path = self._dir / f"{name}.spec.json"
        spec_path.write_bytes(msgspec.json.encode(spec))
        log = self._dir / f"{name}.log"
        with log.open("wb") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.worker", str(spec_path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=Path(__file__).resolve().parent.parent,
            )
        worker = Worker(spec, process, log)
        self._workers.append(worker)
        return worker


def save(name: str, results: dict[str, Any], directory: Path = RESULTS) -> Path:
    """Write ``results`` with the machine's description to ``<directory>/<name>.json``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    document = {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "load_average": load_average(),
        "results": results,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def say(text: str) -> None:
    """Progress for the person running a benchmark (stderr; stdout is the report)."""
    print(text, file=sys.stderr, flush=True)


def attempt(
    errors: dict[str, str],
    label: str,
    work: Callable[[], T],
    quiet: tuple[type[BaseException], ...] = (),
) -> T | None:
    """Run ``work``; on failure record why in ``errors[label]``, say so and return None.

    A phase that fails doesn't end the run: the others still measure. The
    traceback is printed too, except for ``quiet`` errors whose message
    says it all.
    """
    try:
        return work()
    except Exception as exc:
        errors[label] = f"{type(exc).__name__}: {exc}"
        say(f"  ! {label} failed: {type(exc).__name__}: {exc}")
        if not isinstance(exc, quiet):
            traceback.print_exc(file=sys.stderr)
        return None
