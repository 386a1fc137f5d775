"""Recurring schedules over REST: fires with their headers, pause, restart, catch-up, bad input."""

from __future__ import annotations

import asyncio
import itertools
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.conftest import MS, login, make_user
from transports.app import create_app

if TYPE_CHECKING:
    from tests.conftest import BrokerServer

EVERY_MS = 1000
"""The shortest period a schedule may have (the documented minimum)."""


async def _queue(client: httpx.AsyncClient, name: str = "ticks") -> None:
    response = await client.post("/queues", json={"name": name})
    assert response.status_code == 201, response.text


async def _schedule(
    client: httpx.AsyncClient, queue: str = "ticks", **fields: Any
) -> dict[str, Any]:
    timing = {} if "cron" in fields else {"every_ms": EVERY_MS}
    body = {"name": "tick", **timing, "content": {"job": "tick"}, **fields}
    response = await client.post(f"/queues/{queue}/schedules", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _consume(client: httpx.AsyncClient, queue: str, wait: float) -> list[dict[str, Any]]:
    response = await client.get(
        f"/queues/{queue}/messages/consume", params={"wait": wait, "max": 10}
    )
    if response.status_code == 204:
        return []
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    ids = [m["message_id"] for m in messages]
    assert (await client.post("/messages/ack", json={"ids": ids})).status_code == 200
    return messages


async def _all_messages(client: httpx.AsyncClient, queue: str) -> list[dict[str, Any]]:
    response = await client.get(f"/queues/{queue}/messages", params={"limit": 1000})
    assert response.status_code == 200, response.text
    return list(response.json()["messages"])


def _instants(messages: list[dict[str, Any]]) -> list[float]:
    return sorted(
        datetime.fromisoformat(m["headers"]["x-scheduled-for"]).timestamp() for m in messages
    )


async def test_schedule_fires_messages_with_its_headers(client: httpx.AsyncClient) -> None:
    """Each fire publishes the content with ``x-schedule`` and ``x-scheduled-for``."""
    await _queue(client)
    created = await _schedule(client, headers={"kind": "tick"}, priority=3)
    assert created["next_fire_at"] is not None and created["paused"] is False
    got: list[dict[str, Any]] = []
    for _ in range(20):
        got += await _consume(client, "ticks", wait=3)
        if len(got) >= 2:
            break
    assert len(got) >= 2
    first, second = got[0], got[1]
    assert first["content"] == {"job": "tick"}
    assert first["priority"] == 3
    assert first["headers"]["x-schedule"] == "tick"
    assert first["headers"]["kind"] == "tick"
    gap = _instants([second])[0] - _instants([first])[0]
    assert gap == pytest.approx(EVERY_MS / 1000)
    shown = (await client.get("/queues/ticks/schedules/tick")).json()
    assert shown["last_fired_at"] is not None
    assert datetime.fromisoformat(shown["next_fire_at"]) > datetime.fromisoformat(
        shown["last_fired_at"]
    )


async def test_pause_stops_fires_and_resume_restarts_them(client: httpx.AsyncClient) -> None:
    """A paused schedule publishes nothing; after a resume it fires again, without catching up."""
    await _queue(client)
    await _schedule(client)
    assert await _consume(client, "ticks", wait=5)
    response = await client.patch("/queues/ticks/schedules/tick", json={"paused": True})
    assert response.status_code == 200 and response.json()["paused"] is True
    await asyncio.sleep(300 * MS)  # a fire under way when paused may still land
    await _consume(client, "ticks", wait=0)
    await asyncio.sleep(2500 * MS)
    assert await _consume(client, "ticks", wait=0) == []
    listed = (await client.get("/queues/ticks/schedules")).json()
    assert [(s["name"], s["paused"]) for s in listed] == [("tick", True)]
    resumed_at = datetime.now().timestamp()
    response = await client.patch("/queues/ticks/schedules/tick", json={"paused": False})
    assert response.json()["paused"] is False
    after = await _consume(client, "ticks", wait=5)
    assert after and min(_instants(after)) >= resumed_at - 0.01


async def test_delete_stops_fires(client: httpx.AsyncClient) -> None:
    """A deleted schedule publishes nothing more and answers 404."""
    await _queue(client)
    await _schedule(client)
    assert (await client.delete("/queues/ticks/schedules/tick")).status_code == 204
    await asyncio.sleep(300 * MS)
    await _consume(client, "ticks", wait=0)
    await asyncio.sleep(2000 * MS)
    assert await _consume(client, "ticks", wait=0) == []
    assert (await client.get("/queues/ticks/schedules/tick")).status_code == 404
    assert (await client.delete("/queues/ticks/schedules/tick")).status_code == 404


async def test_restart_fires_no_instant_twice_and_one_catch_up(
    client: httpx.AsyncClient, server: BrokerServer
) -> None:
    """Across a stop of several periods: each instant once, and the missed ones are one message."""
    await _queue(client)
    await _schedule(client)
    for _ in range(20):
        if len(await _all_messages(client, "ticks")) >= 2:
            break
        await asyncio.sleep(500 * MS)
    await server.stop()
    await asyncio.sleep(3500 * MS)  # three or four instants missed
    server.app = create_app(server.settings)
    await server.start()
    token = (await login(server.url))["access_token"]
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}
    ) as fresh:
        await asyncio.sleep(2500 * MS)
        # The schedule first: a fire between the two reads adds a message, never a record.
        shown = (await fresh.get("/queues/ticks/schedules/tick")).json()
        instants = _instants(await _all_messages(fresh, "ticks"))
    assert len(instants) == len(set(instants)), "an instant fired twice"
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(instants)]
    long_gaps = [gap for gap in gaps if gap > EVERY_MS / 1000]
    # One catch-up for the latest missed instant: the others leave one gap, not a burst.
    assert len(long_gaps) == 1, gaps
    assert long_gaps[0] >= 2 * EVERY_MS / 1000, gaps
    assert datetime.fromisoformat(shown["last_fired_at"]).timestamp() in instants[-2:]


async def test_deleting_a_queue_deletes_its_schedules(client: httpx.AsyncClient) -> None:
    """A queue created again under the same name has none of the old one's schedules."""
    await _queue(client)
    await _schedule(client, cron="0 0 1 1 *")
    assert (await client.delete("/queues/ticks")).status_code == 204
    assert (await client.get("/queues/ticks/schedules")).status_code == 404
    await _queue(client)
    assert (await client.get("/queues/ticks/schedules")).json() == []


async def test_schedules_survive_a_restart(client: httpx.AsyncClient, server: BrokerServer) -> None:
    """A schedule and its paused state are stored."""
    await _queue(client)
    await _schedule(client, name="nightly", cron="0 3 * * *", timezone="Europe/Riga")
    await client.patch("/queues/ticks/schedules/nightly", json={"paused": True})
    await server.restart()
    token = (await login(server.url))["access_token"]
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}
    ) as fresh:
        shown = (await fresh.get("/queues/ticks/schedules/nightly")).json()
    assert (shown["cron"], shown["timezone"], shown["paused"]) == ("0 3 * * *", "Europe/Riga", True)
    # 03:00 in Riga is 01:00 UTC in winter, 00:00 UTC in summer.
    assert datetime.fromisoformat(shown["next_fire_at"]).minute == 0


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"cron": "61 * * * *", "every_ms": None}, "cron"),
        ({"cron": "* * * * * *", "every_ms": None}, "cron"),
        ({"cron": "* * * * *"}, "cron"),
        ({"every_ms": None}, "cron"),
        ({"every_ms": 999}, "every_ms"),
        ({"timezone": "Not/AZone", "cron": "* * * * *", "every_ms": None}, "timezone"),
        ({"start_at": "2026-02-01T00:00:00Z", "end_at": "2026-01-01T00:00:00Z"}, "end_at"),
        ({"priority": 10}, "priority"),
        ({"name": "bad name!"}, "name"),
    ],
)
async def test_bad_definitions_are_422_naming_the_field(
    client: httpx.AsyncClient, fields: dict[str, Any], field: str
) -> None:
    """Each invalid definition is a 422 whose detail names the field."""
    await _queue(client)
    body = {"name": "tick", "every_ms": EVERY_MS, "content": 1, **fields}
    response = await client.post("/queues/ticks/schedules", json=body)
    assert response.status_code == 422, response.text
    assert field in response.json()["detail"]


async def test_unknown_field_duplicate_and_missing_queue(client: httpx.AsyncClient) -> None:
    """A typo is 422 ``unknown_field``; a taken name 409; an unknown queue or schedule 404."""
    await _queue(client)
    response = await client.post(
        "/queues/ticks/schedules", json={"name": "t", "every": 1000, "content": 1}
    )
    assert response.status_code == 422 and response.json()["code"] == "unknown_field"
    await _schedule(client, cron="0 0 1 1 *")
    response = await client.post(
        "/queues/ticks/schedules", json={"name": "tick", "every_ms": 5000, "content": 1}
    )
    assert response.status_code == 409 and response.json()["code"] == "schedule_exists"
    response = await client.post(
        "/queues/nope/schedules", json={"name": "t", "every_ms": 5000, "content": 1}
    )
    assert response.status_code == 404
    assert (await client.get("/queues/ticks/schedules/nope")).status_code == 404
    response = await client.patch("/queues/ticks/schedules/tick", json={"paused": "yes"})
    assert response.status_code == 422
    response = await client.patch("/queues/ticks/schedules/tick", json={"pause": True})
    assert response.status_code == 422 and response.json()["code"] == "unknown_field"


async def test_permissions(client: httpx.AsyncClient, server: BrokerServer) -> None:
    """Changing schedules needs ``manage``; reading them ``consume`` or ``manage``."""
    await _queue(client)
    await _schedule(client, cron="0 0 1 1 *")
    reader = await make_user(
        client, server, "reader", [{"pattern": "ticks", "actions": ["consume"]}]
    )
    writer = await make_user(
        client, server, "writer", [{"pattern": "ticks", "actions": ["publish"]}]
    )
    async with httpx.AsyncClient(base_url=server.url) as http:
        as_reader = {"Authorization": f"Bearer {reader}"}
        as_writer = {"Authorization": f"Bearer {writer}"}
        assert (await http.get("/queues/ticks/schedules", headers=as_reader)).status_code == 200
        body = {"name": "x", "every_ms": 5000, "content": 1}
        response = await http.post("/queues/ticks/schedules", json=body, headers=as_reader)
        assert response.status_code == 403
        response = await http.patch(
            "/queues/ticks/schedules/tick", json={"paused": True}, headers=as_reader
        )
        assert response.status_code == 403
        assert (await http.get("/queues/ticks/schedules", headers=as_writer)).status_code == 403
        assert (await http.get("/queues/ticks/schedules")).status_code == 401
