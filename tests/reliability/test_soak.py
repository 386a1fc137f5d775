"""Soak, short: the `benchmarks.soak` harness for a few seconds with 1,000 WebSocket consumers.

Two worker processes hold the consumers; a third publishes over REST and
WebSocket. The run happens once per module; each test asserts one of its
promises. Memory and descriptor growth are compared after a short warm-up
with generous bounds (a 15-second run shows gross leaks only; the 10-minute
``python -m benchmarks.soak`` is the real check). Latency is reported, not
asserted: no timing assertions in tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from benchmarks.soak import SoakConfig, SoakReport, run_soak

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.slow

CONSUMERS = 1000


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoakReport]:
    """One soak: 1,000 consumers in 2 processes, 200 publishes/s for 15 s."""
    config = SoakConfig(
        duration_s=15.0, consumers=CONSUMERS, workers=2, queues=20, rate=200.0,
        sample_s=1.0, warmup_s=5.0, window_s=5.0, rss_growth_mb=64.0, fd_growth=16,
        data_dir=tmp_path_factory.mktemp("soak"),
    )  # fmt: skip
    result = run_soak(config)
    print("\n".join(result.lines()))
    yield result


def _why(report: SoakReport) -> str:
    return "\n".join(report.lines())


def test_every_consumer_connected_and_stayed(report: SoakReport) -> None:
    """The broker counted all 1,000 consumers through the load, and none was disconnected."""
    assert report.server_consumers == CONSUMERS, _why(report)
    assert report.disconnects == 0, _why(report)


def test_no_confirmed_message_is_lost(report: SoakReport) -> None:
    """Every publish confirmed over REST or WebSocket reached a consumer."""
    assert report.confirmed_ws > 0, _why(report)
    assert report.confirmed_rest > 0, _why(report)
    assert report.lost == 0, _why(report)


def test_server_memory_stays_flat(report: SoakReport) -> None:
    """The broker's RSS at the end of the load is within 64 MB of its RSS after warm-up."""
    assert report.memory_flat, _why(report)


def test_server_file_descriptors_stay_flat(report: SoakReport) -> None:
    """The broker holds no more than 16 descriptors more at the end than after warm-up."""
    assert report.fds_flat, _why(report)
