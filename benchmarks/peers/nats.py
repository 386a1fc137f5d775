"""NATS JetStream under the common workload, with nats-py.

One stream per queue (file storage, work-queue retention: a message is
removed once acked) and one durable push consumer per stream with explicit
acks, ``max_ack_pending`` = the total prefetch of its subscribers, and a
deliver group so that several subscribers share it. Publishing uses
``publish_async`` with ``window`` publishes awaiting their PubAck (the
stream stored the message); a subscriber acks each message on arrival.
NATS runs as the system's service on 127.0.0.1:4222 with JetStream on.

Durability caveat: JetStream answers the PubAck once the message is in its
file store, and fsyncs on a timer (``sync_interval``, 2 minutes by default
in the versions that have the setting): like our SQLite
``synchronous=NORMAL``, safe against a crash of the process, not of the
machine. RabbitMQ confirms a persistent message after fsyncing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import nats
from nats.js import api
from nats.js.errors import NotFoundError

from ..worker import Spec, wait_for_stop
from ..workload import Tally, body, timed_sends
from .service import PeerService

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg

__all__ = ["ROLES", "URL", "Nats", "consume", "deliver_subject", "produce", "subject"]

URL = "nats://127.0.0.1:4222"
PORT = 4222
GROUP = "bench"


def subject(queue: str) -> str:
    """The subject published to for ``queue`` (its stream is named ``queue``)."""
    return f"wsbroker-bench.{queue}"


def deliver_subject(queue: str) -> str:
    """Where the stream's push consumer delivers."""
    return f"wsbroker-bench-deliver.{queue}"


async def produce(spec: Spec, ready: Callable[[], None]) -> dict[str, Any]:
    """Publish with ``publish_async`` (``window`` awaiting their PubAck), or at ``rate``."""
    subjects = [subject(queue) for queue in spec.queues]
    nc = await nats.connect(spec.endpoint["url"])
    try:
        js = nc.jetstream(publish_async_max_pending=spec.window)
        ready()
        if spec.rate:

            async def send_at(seq: int, sent: float) -> None:
                await (await js.publish_async(subjects[seq % len(subjects)], body(seq, sent)))

            latencies, achieved = await timed_sends(send_at, spec.rate, spec.duration)
            return {"published": len(latencies), "achieved_rate": achieved, "confirm": latencies}
        started = time.monotonic()
        acks = [
            await js.publish_async(subjects[seq % len(subjects)], body(seq))
            for seq in range(spec.count)
        ]
        await asyncio.gather(*acks)
        finished = time.monotonic()
        return {"published": spec.count, "started": started, "finished": finished}
    finally:
        await nc.close()


async def consume(spec: Spec, ready: Callable[[], None]) -> dict[str, Any]:
    """Subscribe ``connections`` times to each stream's push consumer; ack each message."""
    tally = Tally(spec.count, measure=spec.rate > 0)

    async def on_message(msg: Msg) -> None:
        at = tally.arrived(msg.data)
        await msg.ack()
        tally.counted(at)

    connections: list[NATS] = []
    try:
        subscribing = time.monotonic()
        for _ in range(spec.connections):
            nc = await nats.connect(spec.endpoint["url"])
            connections.append(nc)
            for queue in spec.queues:
                await nc.subscribe(deliver_subject(queue), queue=GROUP, cb=on_message)
            await nc.flush()
        subscribed = time.monotonic()
        ready()
        await (wait_for_stop() if spec.until_stop else tally.done.wait())
        for nc in connections:
            await nc.flush()
        last = time.monotonic()
    finally:
        for nc in connections:
            await nc.close()
    return tally.report(subscribing=subscribing, subscribed=subscribed, last=last)


ROLES = {"produce": produce, "consume": consume}


class Nats(PeerService):
    """The NATS service on 127.0.0.1:4222: reachability, version and streams."""

    key = "nats"
    name = "NATS JetStream"
    module = "benchmarks.peers.nats"
    port = PORT
    url = URL
    version_prefix = "nats-server"
    refusal = f"no JetStream at {URL}"

    @staticmethod
    async def server_version() -> str:
        """The server's version, from a fresh connection."""
        return await _server_version()

    def create(self, queues: Sequence[str], prefetch: int, consumers: int) -> None:
        asyncio.run(_streams(queues, prefetch * consumers))

    def delete(self, queues: Sequence[str]) -> None:
        asyncio.run(_streams(queues, 0))


async def _server_version() -> str:
    nc = await nats.connect(URL, connect_timeout=5, max_reconnect_attempts=0)
    try:
        await nc.jetstream().account_info()
        version = nc.connected_server_version
        return f"{version.major}.{version.minor}.{version.patch}"
    finally:
        await nc.close()


async def _streams(queues: Sequence[str], max_ack_pending: int) -> None:
    """Delete the streams of ``queues``; with a ``max_ack_pending``, make them again, empty."""
    nc = await nats.connect(URL, connect_timeout=5, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        for queue in queues:
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(queue)
            if not max_ack_pending:
                continue
            await js.add_stream(
                name=queue,
                subjects=[subject(queue)],
                storage=api.StorageType.FILE,
                retention=api.RetentionPolicy.WORK_QUEUE,
            )
            await js.add_consumer(
                queue,
                durable_name=GROUP,
                deliver_subject=deliver_subject(queue),
                deliver_group=GROUP,
                ack_policy=api.AckPolicy.EXPLICIT,
                max_ack_pending=max_ack_pending,
                ack_wait=60.0,
            )
    finally:
        await nc.close()
