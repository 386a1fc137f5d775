"""The one workload every system gets: 1 KiB JSON messages, pipelined or paced.

Each message body is a JSON object of exactly `PAYLOAD_BYTES` bytes,
``{"t": <time.monotonic() when sent>, "seq": n, "pad": "xx..."}``; a
consumer takes the publish-to-deliver latency as its own
``time.monotonic()`` minus ``t`` (one clock for all processes on Linux).
The same bytes go to RabbitMQ and NATS as the message body, and to our
broker as the message's JSON ``content``.

The `Plan` holds the sizes of a suite run (``--quick`` shrinks them); the
helpers here drive the publishing loops of every client module alike.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

__all__ = [
    "PAYLOAD_BYTES",
    "Plan",
    "Tally",
    "body",
    "paced",
    "pipelined",
    "rest_body",
    "stamp",
    "timed_sends",
]

PAYLOAD_BYTES = 1024
_PAD = b"x" * PAYLOAD_BYTES


class _Stamp(msgspec.Struct):
    t: float


_stamp_decoder = msgspec.json.Decoder(_Stamp)


def body(seq: int, t: float | None = None) -> bytes:
    """Message ``seq``'s 1 KiB JSON body, stamped with ``t`` (now by default)."""
    head = b'{"t":%.6f,"seq":%d,"pad":"' % (time.monotonic() if t is None else t, seq)
    return head + _PAD[: PAYLOAD_BYTES - len(head) - 2] + b'"}'


def stamp(raw: bytes) -> float:
    """The send time stamped in a body made by `body`."""
    return _stamp_decoder.decode(raw).t


def rest_body(count: int | None = None) -> bytes:
    """A REST publish body with the 1 KiB content: one message, or a batch of ``count``."""
    one = b'{"content":' + body(0, 0.0) + b"}"
    if count is None:
        return one
    return b'{"messages":[' + b",".join([one] * count) + b"]}"


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """The sizes of one suite run."""

    count: int = 50_000
    """Messages per throughput run (end to end, publish, drain, scaling)."""
    runs: int = 3
    """Runs per figure; the table shows their median and min-max."""
    window: int = 500
    """Publishes in flight."""
    prefetch: int = 500
    """Deliveries a consumer may hold unacked."""
    rate: float = 1000.0
    """Publishes per second in the latency phase."""
    duration: float = 10.0
    """Seconds of the latency phase."""
    rest_connections: int = 64
    """Keep-alive connections of wrk in the REST phase."""
    rest_seconds: int = 10
    """Seconds of one wrk run."""
    queues: tuple[int, ...] = (1, 4, 16)
    """Queue counts of the scaling phase."""
    consumers: tuple[int, ...] = (1, 10, 100)
    """Consumer counts of the scaling phase."""
    pending: int = 1_000_000
    """Messages left pending for the memory phase."""
    ws_consumers: int = 5_000
    """Concurrent WebSocket consumers of the consumers phase."""
    consumer_processes: int = 4
    """Client processes the WebSocket consumers are spread over."""
    messages_per_consumer: int = 10
    """Messages published per WebSocket consumer in the consumers phase."""

    @classmethod
    def quick(cls, runs: int = 3) -> Plan:
        """Small enough to debug with: 5,000 messages per run, a shorter latency phase."""
        return cls(
            count=5_000,
            runs=runs,
            duration=3.0,
            rest_seconds=3,
            pending=100_000,
            ws_consumers=500,
            consumer_processes=2,
        )

    def timeout(self, count: int | None = None, floor_per_s: float = 500.0) -> float:
        """A generous bound for one run of ``count`` messages (at least ``floor_per_s``)."""
        return 60.0 + (self.count if count is None else count) / floor_per_s


async def paced(rate: float, duration: float) -> AsyncIterator[int]:
    """Yield 0, 1, 2, ... at ``rate`` per second for ``duration`` seconds, on schedule.

    A late loop catches up (several yields at once) rather than drift, so the
    offered rate stays ``rate`` whatever the system under test does.
    """
    total = round(rate * duration)
    started = time.monotonic()
    for seq in range(total):
        delay = started + seq / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        yield seq


async def pipelined(
    send: Callable[[int], Awaitable[object]], count: int, window: int
) -> tuple[float, float]:
    """Run ``send(seq)`` for ``count`` messages with ``window`` unconfirmed at once.

    ``send`` resolves when its message was confirmed. Returns the monotonic
    times of the first send and of the last confirm.

    Raises:
        Exception: the first failed send, after all of them ended.
    """
    slots = asyncio.Semaphore(window)
    tasks: set[asyncio.Task[object]] = set()
    failures: list[BaseException] = []

    def done(task: asyncio.Task[object]) -> None:
        tasks.discard(task)
        slots.release()
        if not task.cancelled() and task.exception() is not None:
            failures.append(task.exception())  # type: ignore[arg-type]

    started = time.monotonic()
    for seq in range(count):
        await slots.acquire()
        if failures:
            break
        task = asyncio.ensure_future(send(seq))
        tasks.add(task)
        task.add_done_callback(done)
    while tasks:
        await asyncio.wait(set(tasks))
    finished = time.monotonic()
    if failures:
        raise failures[0]
    return started, finished


async def timed_sends(
    send: Callable[[int, float], Awaitable[object]], rate: float, duration: float
) -> tuple[list[float], float]:
    """Publish at ``rate`` for ``duration`` s; return each publish-to-confirm time (s).

    ``send(seq, t)`` publishes the body stamped ``t`` and resolves on its
    confirm. Also returns the achieved publish rate.
    """
    latencies: list[float] = []
    tasks: set[asyncio.Task[None]] = set()

    async def one(seq: int) -> None:
        sent = time.monotonic()
        await send(seq, sent)
        latencies.append(time.monotonic() - sent)

    started = time.monotonic()
    published = 0
    async for seq in paced(rate, duration):
        task = asyncio.ensure_future(one(seq))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        published += 1
    seconds = time.monotonic() - started
    if tasks:
        await asyncio.gather(*tasks)
    return latencies, published / seconds if seconds > 0 else 0.0


class Tally:
    """What a consumer role counts, the same way for every system.

    Call `arrived` when a message comes (before acking it: its latency is
    taken then) and `counted` once it is acked; `done` is set at ``count``.

    Args:
        count: messages to wait for.
        measure: keep publish-to-deliver latencies (the stamp in the body).
        record_ids: keep the message ids seen (for duplicates).
    """

    def __init__(self, count: int, *, measure: bool, record_ids: bool = False) -> None:
        self.count = count
        self.measure = measure
        self.record_ids = record_ids
        self.latencies: list[float] = []
        self.ids: list[int] = []
        self.received = 0
        self.first = 0.0
        self.done = asyncio.Event()

    def arrived(self, data: bytes, message_id: int | None = None) -> float:
        """A message came: note its latency (and id); return when it came."""
        now = time.monotonic()
        if self.measure:
            self.latencies.append(now - stamp(data))
        if self.record_ids and message_id is not None:
            self.ids.append(message_id)
        return now

    def counted(self, at: float) -> None:
        """The message that `arrived` at ``at`` is acked."""
        if not self.received:
            self.first = at
        self.received += 1
        if self.received == self.count:
            self.done.set()

    def report(self, *, subscribing: float, subscribed: float, last: float) -> dict[str, Any]:
        """What every consumer role hands back to the coordinator (monotonic times)."""
        return {
            "received": self.received,
            "subscribe_started": subscribing,
            "subscribe_seconds": subscribed - subscribing,
            "first": self.first,
            "last": last,
            "deliver": self.latencies,
            "ids": self.ids,
        }
