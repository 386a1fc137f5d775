"""``broker topics ...`` and the client's topic methods against a real server."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.conftest import ADMIN_PASSWORD
from transports.client import RequestError, RestClient

if TYPE_CHECKING:
    import httpx

    from tests.conftest import BrokerServer
    from tests.transports.cli.cli_helpers import Cli


async def test_topic_commands_end_to_end(logged_in: Cli, client: httpx.AsyncClient) -> None:
    """create, bind, route, publish, list, unbind and delete, each from the command line."""
    await client.post("/queues", json={"name": "eu"})
    await logged_in.ok("topics", "create", "orders")
    await logged_in.ok("topics", "bind", "orders", "eu", "orders.eu.#")
    assert (await logged_in.ok("topics", "route", "orders", "orders.eu.x")).out.split() == ["eu"]
    run = await logged_in.ok(
        "topics", "publish", "orders", "orders.eu.x", '{"n": 1}', "--priority", "2"
    )
    [published] = run.lines()
    assert [r["queue"] for r in published["routed"]] == ["eu"]
    listing = await logged_in.ok("topics", "list")
    assert listing.out.splitlines() == ["orders", "  orders.eu.#  ->  eu"]
    await logged_in.ok("topics", "unbind", "orders", "eu", "orders.eu.#")
    again = await logged_in("topics", "unbind", "orders", "eu", "orders.eu.#")
    assert again.code == 1
    assert "binding" in again.err
    await logged_in.ok("topics", "delete", "orders")
    assert (await client.get("/topics")).json() == []
    [message] = (await client.get("/queues/eu/messages/consume")).json()["messages"]
    assert message["content"] == {"n": 1}


async def test_client_topic_methods(server: BrokerServer, client: httpx.AsyncClient) -> None:
    """RestClient's topic methods wrap the routes; errors raise RequestError with the status."""
    await client.post("/queues", json={"name": "q"})
    async with RestClient(server.url, username="admin", password=ADMIN_PASSWORD) as rest:
        assert (await rest.create_topic("t")).name == "t"
        binding = await rest.bind("t", "q", "a.*")
        assert (binding.queue, binding.pattern) == ("q", "a.*")
        assert await rest.route("t", "a.b") == ["q"]
        result = await rest.publish_topic("t", "a.b", {"x": 1}, headers={"h": "v"})
        assert [r.queue for r in result.routed] == ["q"]
        assert (await rest.publish_topic("t", "b", 1)).routed == []
        [topic] = await rest.topics()
        assert [b.pattern for b in topic.bindings] == ["a.*"]
        assert (await rest.topic("t")).name == "t"
        with pytest.raises(RequestError) as raised:
            await rest.publish_topic("t", "a.*", 1)
        assert raised.value.status == 422
        await rest.unbind("t", "q", "a.*")
        await rest.delete_topic("t")
        assert await rest.topics() == []
