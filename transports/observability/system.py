"""`SystemSampler`: process and host readings (psutil), cached for a second.

Some psutil calls read several ``/proc`` files (open connections scan the
host's socket tables), so a reading is reused for `CACHE_S`: ``/stats``
polled ten times a second costs one reading a second. CPU percentages are
measured between two readings (``cpu_percent(interval=None)``), never by
sleeping; the first reading after start says 0.
"""

from __future__ import annotations

import platform
import time
from typing import TYPE_CHECKING

import msgspec
import psutil

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

__all__ = ["CACHE_S", "SystemSampler", "SystemStats"]

CACHE_S = 1.0
"""How long one reading is served before psutil is asked again."""


class SystemStats(msgspec.Struct, frozen=True, kw_only=True):
    """The ``system`` block of ``/stats``: this process, its host and the data dir's disk."""

    pid: int
    process_cpu_percent: float
    """CPU used by the broker process since the previous reading (100 = one core)."""
    host_cpu_percent: float
    """CPU used by the whole host since the previous reading (100 = all cores)."""
    cpu_count: int
    memory_rss_bytes: int
    memory_percent: float
    """The process's resident memory as a share of the host's physical memory."""
    host_memory_total_bytes: int
    host_memory_percent: float
    disk_total_bytes: int
    disk_used_bytes: int
    disk_free_bytes: int
    disk_percent: float
    """Usage of the file system holding the data dir."""
    open_connections: int | None
    """Internet sockets of the process (None where the OS refuses to tell)."""
    open_files: int | None
    """File descriptors of the process (None on systems without them)."""
    threads: int
    python_version: str
    os: str


class SystemSampler:
    """Reads `SystemStats` at most once per `CACHE_S`.

    Args:
        data_dir: the directory whose file system's usage is reported.
        clock: a monotonic clock in seconds.
    """

    def __init__(self, data_dir: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.data_dir = data_dir
        self.process = psutil.Process()
        self._clock = clock
        self._cached: SystemStats | None = None
        self._read_at = 0.0
        self._python = platform.python_version()
        self._os = platform.platform()

    def read(self) -> SystemStats:
        """The latest reading, taken now if the cached one is older than `CACHE_S`."""
        now = self._clock()
        cached = self._cached
        if cached is not None and now - self._read_at < CACHE_S:
            return cached
        cached = self._cached = self._measure()
        self._read_at = now
        return cached

    def _measure(self) -> SystemStats:
        process = self.process
        with process.oneshot():
            cpu = process.cpu_percent(interval=None)
            rss = process.memory_info().rss
            memory_percent = process.memory_percent()
            threads = process.num_threads()
            open_files = _num_fds(process)
            connections = _num_connections(process)
        host_memory = psutil.virtual_memory()
        try:
            disk = psutil.disk_usage(str(self.data_dir))
            disk_values = (disk.total, disk.used, disk.free, disk.percent)
        except OSError:  # the data dir vanished under us: report zeros, not a 500
            disk_values = (0, 0, 0, 0.0)
        return SystemStats(
            pid=process.pid,
            process_cpu_percent=cpu,
            host_cpu_percent=psutil.cpu_percent(interval=None),
            cpu_count=psutil.cpu_count() or 1,
            memory_rss_bytes=rss,
            memory_percent=round(memory_percent, 3),
            host_memory_total_bytes=host_memory.total,
            host_memory_percent=host_memory.percent,
            disk_total_bytes=disk_values[0],
            disk_used_bytes=disk_values[1],
            disk_free_bytes=disk_values[2],
            disk_percent=disk_values[3],
            open_connections=connections,
            open_files=open_files,
            threads=threads,
            python_version=self._python,
            os=self._os,
        )


def _num_fds(process: psutil.Process) -> int | None:
    try:
        return process.num_fds()
    except (AttributeError, psutil.Error):  # Windows has handles, not fds
        return None


def _num_connections(process: psutil.Process) -> int | None:
    try:
        return len(process.net_connections(kind="inet"))
    except psutil.Error:  # AccessDenied on macOS without privileges
        return None
