"""The allocator tuning the server applies at start (glibc: fewer arenas, a trim after replay)."""

from __future__ import annotations

import sys

import pytest

from transports import allocator


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tune_and_trim_run_on_glibc() -> None:
    """Both calls reach glibc here (the server calls them at start); a trim after freeing works."""
    assert allocator.tune()
    garbage = [bytes(4096) for _ in range(10_000)]
    del garbage
    assert isinstance(allocator.trim(), bool)
