"""Retries over the WebSocket: a nack frame's ``delay_ms``, the queue's back-off, bad delays."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from tests.transports.ws.test_endpoint import (
    make_queue,
    open_ws,
    publish_rest,
    queue_info,
    recv,
    send,
    subscribe,
)

if TYPE_CHECKING:
    import httpx

    from tests.conftest import BrokerServer


async def test_nack_frame_delay_lets_the_next_message_through(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """A nack with delay_ms: the next message is pushed first, the nacked one after the delay."""
    await make_queue(client)
    first, second = await publish_rest(client, ["first", "second"])
    async with await open_ws(server, admin_token) as ws:
        await subscribe(ws, prefetch=1)
        frame = await recv(ws)
        assert frame["message_id"] == first
        nacked = time.monotonic()
        await send(ws, op="nack", tags=[frame["tag"]], delay_ms=400)
        frame = await recv(ws)
        assert frame["message_id"] == second
        await send(ws, op="ack", tags=[frame["tag"]])
        again = await recv(ws)
        assert time.monotonic() - nacked >= 0.39
    assert (again["message_id"], again["attempt"], again["redelivered"]) == (first, 2, True)


async def test_policy_backoff_grows_between_ws_redeliveries(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """Linear back-off of 150 ms: the second wait is at least twice the first's minimum."""
    await make_queue(
        client, retry={"backoff": "linear", "min_ms": 150, "max_ms": 1000, "jitter": 0.0}
    )
    [id] = await publish_rest(client, ["x"])
    times = []
    async with await open_ws(server, admin_token) as ws:
        await subscribe(ws)
        for _ in range(3):
            frame = await recv(ws)
            times.append(time.monotonic())
            assert frame["message_id"] == id
            await send(ws, op="nack", tags=[frame["tag"]])
        info = await queue_info(client)
    assert times[1] - times[0] >= 0.145
    assert times[2] - times[1] >= 0.295
    assert info["delayed"] == 1


async def test_bad_nack_delay_is_refused_naming_the_field(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """A negative delay_ms is an error frame naming the field; the delivery stays held."""
    await make_queue(client)
    await publish_rest(client, ["x"])
    async with await open_ws(server, admin_token) as ws:
        await subscribe(ws)
        frame = await recv(ws)
        await send(ws, op="nack", tags=[frame["tag"]], delay_ms=-5, ref="n")
        error = await recv(ws)
        assert error["op"] == "error", error
        assert "delay_ms" in str(error), error
        assert (await queue_info(client))["processing"] == 1


async def test_the_last_attempt_is_dead_lettered_after_the_backoffs(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """max_attempts 3 with a 100 ms back-off: two waits, then the third nack dead-letters."""
    await make_queue(client, "dlq")
    retry = {"backoff": "fixed", "min_ms": 100, "max_ms": 100, "jitter": 0.0}
    await make_queue(client, retry=retry, max_attempts=3, dead_letter_queue="dlq")
    [id] = await publish_rest(client, ["x"])
    async with await open_ws(server, admin_token) as ws:
        await subscribe(ws)
        attempts = []
        for _ in range(3):
            frame = await recv(ws)
            attempts.append(frame["attempt"])
            await send(ws, op="nack", tags=[frame["tag"]])
        await subscribe(ws, "dlq")
        dead = await recv(ws)
    assert attempts == [1, 2, 3]
    assert (dead["queue"], dead["message_id"], dead["attempt"]) == ("dlq", id, 1)
