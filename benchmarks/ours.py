"""Our broker under the common workload: its client processes, and its setup over REST.

The roles (run by `benchmarks.worker` on uvloop) use the client library,
`transports.client.Client`, the way an application would:

* ``produce``: `Client.publish_many` (``window`` unconfirmed publishes on one
  WebSocket, each confirmed after its batch committed), or, with a ``rate``,
  one `Client.publish` per message on schedule, timing each confirm;
* ``consume``: subscriptions with a prefetch on ``connections`` WebSockets,
  every message acked on arrival (the library sends the acks of one loop
  turn in one frame).

`Ours` is the coordinator's side: it runs the broker (`BrokerProcess`) and
creates and deletes the queues of each run over REST.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from importlib import metadata
from typing import TYPE_CHECKING, Any
from unittest import mock

import httpx
import msgspec

from transports.client import Client

from .harness import BrokerProcess
from .worker import Spec, wait_for_stop
from .workload import Tally, body, timed_sends

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Sequence

    from transports.client import ClientSubscription

__all__ = ["ROLES", "Ours", "consume", "gather_bounded", "produce"]


async def gather_bounded(awaitables: Iterable[Awaitable[Any]], limit: int) -> list[Any]:
    """Await all of ``awaitables``, at most ``limit`` at a time (connection storms)."""
    slots = asyncio.Semaphore(limit)

    async def one(awaitable: Awaitable[Any]) -> Any:
        async with slots:
            return await awaitable

    return await asyncio.gather(*(one(awaitable) for awaitable in awaitables))


def _clients(spec: Spec, count: int, **options: Any) -> list[Client]:
    url, token = spec.endpoint["url"], spec.endpoint["token"]
    # Each Client makes its own httpx client for the REST API, and with it a
    # TLS context (about 28 ms and 1 MB each, even for http://): the
    # WebSocket-only clients of one process share one instead.
    shared = httpx.AsyncClient(base_url=url)
    with mock.patch.object(httpx, "AsyncClient", return_value=shared):
        return [Client(url, access_token=token, reconnect=False, **options) for _ in range(count)]


async def _close(clients: Sequence[Client]) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(30):
            await gather_bounded((client.close() for client in clients), 200)


async def produce(spec: Spec, ready: Callable[[], None]) -> dict[str, Any]:
    """Publish ``count`` messages pipelined, or at ``rate`` for ``duration`` seconds."""
    (client,) = _clients(spec, 1, window=spec.window)
    queues = spec.queues
    try:
        await client.connect()
        ready()
        if spec.rate:

            async def send(seq: int, sent: float) -> None:
                await client.publish(queues[seq % len(queues)], msgspec.Raw(body(seq, sent)))

            latencies, achieved = await timed_sends(send, spec.rate, spec.duration)
            return {"published": len(latencies), "achieved_rate": achieved, "confirm": latencies}
        shares = [len(range(index, spec.count, len(queues))) for index in range(len(queues))]
        window = max(1, spec.window // len(queues))
        started = time.monotonic()
        await asyncio.gather(
            *(
                client.publish_many(
                    queue, (msgspec.Raw(body(seq)) for seq in range(share)), window=window
                )
                for queue, share in zip(queues, shares, strict=True)
            )
        )
        finished = time.monotonic()
        return {"published": spec.count, "started": started, "finished": finished}
    finally:
        await _close([client])


async def consume(spec: Spec, ready: Callable[[], None]) -> dict[str, Any]:
    """Subscribe on ``connections`` WebSockets to every queue; ack each message on arrival.

    Ends after ``count`` messages in all, or when stopped (``until_stop``).
    """
    clients = _clients(spec, spec.connections)
    subs: list[ClientSubscription] = [
        client.subscribe(queue, spec.prefetch) for client in clients for queue in spec.queues
    ]
    tally = Tally(spec.count, measure=spec.rate > 0, record_ids=spec.record_ids)

    async def drain(sub: ClientSubscription) -> None:
        async for message in sub:
            at = tally.arrived(message.raw, message.message_id)
            await message.ack()
            tally.counted(at)

    tasks: list[asyncio.Task[None]] = []
    try:
        subscribing = time.monotonic()
        await gather_bounded((sub.start() for sub in subs), 100)
        subscribed = time.monotonic()
        tasks = [asyncio.ensure_future(drain(sub)) for sub in subs]
        ready()
        await (wait_for_stop() if spec.until_stop else tally.done.wait())
        for client in clients:
            await client.flush()
        last = time.monotonic()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await _close(clients)
    return tally.report(subscribing=subscribing, subscribed=subscribed, last=last)


ROLES = {"produce": produce, "consume": consume}


class Ours:
    """Our broker for the phases: its process, and its queues made over REST.

    Args:
        **env: ``BROKER_*`` settings on top of the benchmark defaults.
    """

    key = "wsbroker"
    name = "wsbroker"
    module = "benchmarks.ours"

    def __init__(self, **env: str) -> None:
        self.broker = BrokerProcess(**env)
        self._http: httpx.Client | None = None

    @staticmethod
    def unavailable() -> str | None:
        """Why it can't run here (never: the suite starts it)."""
        return None

    def __enter__(self) -> Ours:
        self.broker.__enter__()
        self._http = self.broker.http()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._http is not None:
            self._http.close()
        self.broker.__exit__(None, None, None)

    @property
    def http(self) -> httpx.Client:
        """The admin REST client."""
        assert self._http is not None, "entered"
        return self._http

    def server_pid(self) -> int | None:
        return self.broker.pid

    def version(self) -> str:
        return f"wsbroker {metadata.version('wsbroker')}"

    def endpoint(self) -> dict[str, Any]:
        return {"url": self.broker.url, "token": self.broker.token()}

    def create(self, queues: Sequence[str], prefetch: int, consumers: int) -> None:
        for queue in queues:
            self.http.post("/queues", json={"name": queue}).raise_for_status()

    def delete(self, queues: Sequence[str]) -> None:
        for queue in queues:
            self.http.delete(f"/queues/{queue}")
