"""Plain frames that arrive together (one TCP write): each is still answered on its own.

The server applies consecutive publishes to one queue, or consecutive acks,
received together with one broker call (`Session._hold`). These tests send
such bursts in one write and check the answers a client sending them one by
one gets: a confirm per publish with its ref, in order; an error per refused
frame with its own ref and tags; every good tag settled.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from tests.transports.ws.test_endpoint import (
    eventually,
    make_queue,
    open_ws,
    publish_rest,
    recv,
    subscribe,
)

if TYPE_CHECKING:
    import httpx
    from websockets.asyncio.client import ClientConnection

    from tests.conftest import BrokerServer


def burst(ws: ClientConnection, frames: list[dict[str, Any]]) -> None:
    """Send ``frames``, one WebSocket message each, in one transport write."""
    for frame in frames:
        ws.protocol.send_text(json.dumps(frame).encode())
    ws.send_data()


async def test_a_burst_of_publishes_is_confirmed_one_by_one_in_order(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """Publishes to two queues and one refused publish in one write: each answered by ref."""
    await make_queue(client)
    await make_queue(client, "other")
    frames = [{"op": "publish", "queue": "jobs", "content": n, "ref": n} for n in range(5)]
    frames.append({"op": "publish", "queue": "missing", "content": 5, "ref": 5})
    frames += [{"op": "publish", "queue": "other", "content": n, "ref": n} for n in range(6, 9)]
    frames += [{"op": "publish", "queue": "jobs", "content": n, "ref": n} for n in range(9, 12)]
    async with await open_ws(server, admin_token) as ws:
        burst(ws, frames)
        answers = [await recv(ws) for _ in frames]
    by_ref = {answer["ref"]: answer for answer in answers}
    assert sorted(by_ref) == list(range(12))
    assert (by_ref[5]["op"], by_ref[5]["code"]) == ("error", "queue_not_found")
    confirmed = [answer["ref"] for answer in answers if answer["op"] == "confirm"]
    jobs = [ref for ref in confirmed if ref < 5 or ref >= 9]
    assert jobs == [0, 1, 2, 3, 4, 9, 10, 11]  # one queue's confirms in publish order
    ids = [by_ref[ref]["message_id"] for ref in jobs]
    assert ids == sorted(ids)
    await eventually(client, pending=8)


async def test_a_burst_of_acks_settles_every_good_tag_and_refuses_each_bad_one(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """Acks in one write, two with an unknown tag: an error for each, with its own ref."""
    await make_queue(client)
    await publish_rest(client, list(range(6)))
    async with await open_ws(server, admin_token) as ws:
        await subscribe(ws, prefetch=10)
        tags = [(await recv(ws))["tag"] for _ in range(6)]
        burst(
            ws,
            [
                {"op": "ack", "tags": [tags[0]]},
                {"op": "ack", "tags": [tags[1], 9001], "ref": "a"},
                {"op": "ack", "tags": [tags[2], tags[3]]},
                {"op": "ack", "tags": [9002], "ref": "b"},
                {"op": "ack", "tags": [tags[4]]},
                {"op": "ack", "tags": [tags[0]], "ref": "again"},  # settled already
            ],
        )
        errors = [await recv(ws) for _ in range(3)]
        assert [(e["op"], e["code"], e["ref"], e["tags"]) for e in errors] == [
            ("error", "unknown_tag", "a", [9001]),
            ("error", "unknown_tag", "b", [9002]),
            ("error", "unknown_tag", "again", [tags[0]]),
        ]
        await eventually(client, processed=5, processing=1, pending=0)


async def test_a_compressing_client_gets_every_frame(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """With permessage-deflate (browsers offer it) the frames a writer turn sends still arrive."""
    await make_queue(client)
    async with await open_ws(server, admin_token, compression="deflate") as ws:
        assert ws.protocol.extensions, "the server accepted permessage-deflate"
        await subscribe(ws, prefetch=50)
        burst(ws, [{"op": "publish", "queue": "jobs", "content": n, "ref": n} for n in range(20)])
        frames = [await recv(ws) for _ in range(40)]
    confirms = [frame["ref"] for frame in frames if frame["op"] == "confirm"]
    contents = [frame["content"] for frame in frames if frame["op"] == "deliver"]
    assert confirms == list(range(20))
    assert contents == list(range(20))
