"""The client library's request/reply: publish(wait_result=...) and Message.ack(result=...)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from tests.transports.client.test_client import (
    api as api,
    make_queue,
)

if TYPE_CHECKING:
    import httpx

    from transports.client import Client


async def test_publish_waits_for_the_result_a_subscriber_acks_with(
    api: Client, client: httpx.AsyncClient
) -> None:
    await make_queue(client)

    async def worker() -> None:
        async with api.subscribe("jobs", prefetch=1) as jobs:
            async for message in jobs:
                await message.ack(result={"echo": message.content})
                return

    task = asyncio.create_task(worker())
    answer = await api.publish("jobs", "hello", wait_result=10)
    await task
    assert answer["status"] == "processed"
    assert answer["result"] == {"echo": "hello"}


async def test_publish_without_a_result_in_time_gives_the_id(
    api: Client, client: httpx.AsyncClient
) -> None:
    await make_queue(client)
    answer = await api.publish("jobs", "nobody", wait_result=0.2)
    assert answer["status"] == "pending"
    [message] = await api.consume("jobs", wait=1)
    assert message.message_id == answer["message_id"]
    await message.ack(result=[1])
    response = await client.get(f"/messages/{message.message_id}/result")
    assert response.json()["result"] == [1]
