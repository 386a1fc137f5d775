"""glibc's allocator told to give memory back: fewer arenas, big buffers mapped, a trim.

A broker's RSS should follow its work, not its history. Two glibc defaults
keep freed memory resident:

* one malloc arena per thread that ever allocated (up to 8 per core): the
  storage threads' freed rows stay in their own arenas;
* a dynamic mmap threshold: once a 1 MB request body is freed, later ones
  come from the heap, and the heap stays as long as anything sits above
  them.

`tune` caps the arenas at two and fixes the threshold at 256 KiB, before
any thread starts; `trim` hands free pages inside the heap back
(``malloc_trim``), after the replay at start has freed its rows. Measured
with 1,000,000 pending 1 KiB messages (`benchmarks.memory`): -16 MB idle,
-10 to -20 MB with the backlog. Elsewhere than glibc both are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["trim", "tune"]

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_ARENAS = 2
_MMAP_THRESHOLD = 256 * 1024


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    # musl has neither function: then nothing is tuned.
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def tune() -> bool:
    """Cap the arenas and fix the mmap threshold (call before threads start); whether it did."""
    libc = _libc()
    if libc is None:
        return False
    libc.mallopt(_M_ARENA_MAX, _ARENAS)
    libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
    return True


def trim() -> bool:
    """Give free heap pages back to the system; whether any were."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
