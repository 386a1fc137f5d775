"""RabbitMQ under the common workload, with aio-pika (the asyncio AMQP 0-9-1 client).

Durable classic queues, persistent messages (delivery mode 2), publisher
confirms with ``window`` publishes in flight on one channel, and consumers
with ``basic.qos`` prefetch and a manual ``basic.ack`` per message: the
settings under which RabbitMQ promises what our broker promises (a
confirmed message survives a crash; an unacked one is redelivered).
RabbitMQ runs as the system's service on 127.0.0.1:5672, ``guest``/``guest``.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import aio_pika

from ..worker import Spec, wait_for_stop
from ..workload import Tally, body, pipelined, timed_sends
from .service import PeerService

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

__all__ = ["ROLES", "URL", "RabbitMQ", "consume", "produce"]

URL = "amqp://guest:guest@127.0.0.1:5672/"
PORT = 5672


async def produce(spec: Spec, ready: Callable[[], None]) -> dict[str, Any]:
    """Publish persistent messages with confirms, pipelined or at ``rate``."""
    queues = spec.queues
    connection = await aio_pika.connect(spec.endpoint["url"])
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = channel.default_exchange
        persistent = aio_pika.DeliveryMode.PERSISTENT
        ready()
        if spec.rate:

            async def send_at(seq: int, sent: float) -> None:
                message = aio_pika.Message(body(seq, sent), delivery_mode=persistent)
                await exchange.publish(message, routing_key=queues[seq % len(queues)])

            latencies, achieved = await timed_sends(send_at, spec.rate, spec.duration)
            return {"published": len(latencies), "achieved_rate": achieved, "confirm": latencies}

        async def send(seq: int) -> None:
            message = aio_pika.Message(body(seq), delivery_mode=persistent)
            await exchange.publish(message, routing_key=queues[seq % len(queues)])

        started, finished = await pipelined(send, spec.count, spec.window)
        return {"published": spec.count, "started": started, "finished": finished}
    finally:
        await connection.close()


async def consume(spec: Spec, ready: Callable[[], None]) -> dict[str, Any]:
    """Consume with prefetch on ``connections`` connections (a channel per queue); ack each."""
    tally = Tally(spec.count, measure=spec.rate > 0)

    async def on_message(message: AbstractIncomingMessage) -> None:
        at = tally.arrived(message.body)
        await message.ack()
        tally.counted(at)

    connections: list[AbstractConnection] = []
    try:
        subscribing = time.monotonic()
        for _ in range(spec.connections):
            connection = await aio_pika.connect(spec.endpoint["url"])
            connections.append(connection)
            for name in spec.queues:
                channel = await connection.channel()
                await channel.set_qos(prefetch_count=spec.prefetch)
                queue = await channel.declare_queue(name, passive=True)
                await queue.consume(on_message, no_ack=False)
        subscribed = time.monotonic()
        ready()
        await (wait_for_stop() if spec.until_stop else tally.done.wait())
        last = time.monotonic()
    finally:
        for opened in connections:
            await opened.close()
    return tally.report(subscribing=subscribing, subscribed=subscribed, last=last)


ROLES = {"produce": produce, "consume": consume}


class RabbitMQ(PeerService):
    """The RabbitMQ service on 127.0.0.1:5672: reachability, version and queues."""

    key = "rabbitmq"
    name = "RabbitMQ"
    module = "benchmarks.peers.rabbitmq"
    port = PORT
    url = URL
    version_prefix = "RabbitMQ"
    refusal = "cannot connect as guest"

    @staticmethod
    async def server_version() -> str:
        """The server's version, from a fresh connection."""
        return await _server_version()

    def create(self, queues: Sequence[str], prefetch: int, consumers: int) -> None:
        asyncio.run(_declare(queues, fresh=True))

    def delete(self, queues: Sequence[str]) -> None:
        asyncio.run(_declare(queues, fresh=False))


async def _server_version() -> str:
    connection = await aio_pika.connect(URL, timeout=5)
    try:
        transport = connection.transport
        properties = transport.connection.server_properties if transport else {}
        version = properties.get("version", b"?")
        return version.decode() if isinstance(version, bytes) else str(version)
    finally:
        await connection.close()


async def _declare(queues: Sequence[str], *, fresh: bool) -> None:
    """Delete ``queues``; with ``fresh``, declare them again, durable and empty."""
    connection = await aio_pika.connect(URL, timeout=10)
    try:
        channel = await connection.channel()
        for name in queues:
            await channel.queue_delete(name)
            if fresh:
                await channel.declare_queue(name, durable=True)
    finally:
        await connection.close()
