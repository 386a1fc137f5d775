"""A data dir written by the previous release starts on this code with everything intact.

``tests/fixtures/datadir-0.1.0`` was made by ``tests/fixtures/make_datadir.py``
running against release 0.1.0 (commit eacd139): queues with options, messages
in every state (pending, delayed, processing at the stop, processed,
dead-lettered), a user with permissions. Every schema change must keep these
tests passing, migrating the copy on start.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.conftest import BrokerServer, login, make_settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "datadir-0.1.0"
EXPECTED: dict[str, Any] = json.loads((FIXTURE / "expected.json").read_text())
TEN_YEARS_S = 10 * 365 * 24 * 3600.0


@pytest.fixture
async def upgraded(tmp_path: Path) -> AsyncIterator[BrokerServer]:
    """A broker started on a copy of the previous release's data dir."""
    data = tmp_path / "data"
    shutil.copytree(FIXTURE, data, ignore=shutil.ignore_patterns("expected.json"))
    data.chmod(0o700)
    (data / "jwt.secret").chmod(0o600)
    # No admin password from the environment: the stored hash must still work.
    # The fixture's processed messages were settled when it was made: keep them.
    settings = make_settings(data, admin_password=None, processed_retention_s=TEN_YEARS_S)
    server = BrokerServer(settings)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def admin(upgraded: BrokerServer) -> AsyncIterator[httpx.AsyncClient]:
    """The fixture's admin, logged in with the password the old release was given."""
    pair = await login(upgraded.url, "admin", EXPECTED["admin_password"])
    async with httpx.AsyncClient(
        base_url=upgraded.url, headers={"Authorization": f"Bearer {pair['access_token']}"}
    ) as http:
        yield http


async def test_every_queue_keeps_its_options_and_counts(admin: httpx.AsyncClient) -> None:
    """Each queue comes back with its options and its messages counted by state."""
    queues = {queue["name"]: queue for queue in (await admin.get("/queues")).json()}
    assert set(queues) == set(EXPECTED["queues"])
    for name, expected in EXPECTED["queues"].items():
        queue = queues[name]
        for option in (
            "max_attempts", "dead_letter_queue", "message_ttl_ms", "max_length", "max_bytes",
            "overflow", "lease",
        ):  # fmt: skip
            assert queue[option] == expected[option], (name, option)
        # What was processing at the stop is pending again.
        assert (
            queue["pending"] + queue["processing"] == expected["pending"] + expected["processing"]
        )
        assert queue["processed"] == expected["processed"]
        assert queue["delayed"] == expected["delayed"]


async def _consume_all(admin: httpx.AsyncClient, queue: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while (response := await admin.get(f"/queues/{queue}/messages/consume")).status_code == 200:
        messages.extend(response.json()["messages"])
    assert response.status_code == 204, response.text
    return messages


async def test_pending_messages_keep_content_headers_and_order(admin: httpx.AsyncClient) -> None:
    """Pending messages are delivered with their bodies and headers, by priority then age."""
    messages = await _consume_all(admin, "orders")
    assert [m["content"] for m in messages] == [{"order": 4}, {"order": 0}, {"order": 3}]
    assert [m["headers"] for m in messages] == [{"k": "v4"}, {"k": "v0"}, {"k": "v3"}]


async def test_a_message_processing_at_the_stop_comes_back_redelivered(
    admin: httpx.AsyncClient,
) -> None:
    """The message leased when the old release stopped is delivered again, marked so."""
    by_id = {m["message_id"]: m for m in await _consume_all(admin, "orders")}
    again = by_id[EXPECTED["processing_message_id"]]
    assert again["redelivered"] is True
    assert again["attempt"] == 2


async def test_dead_lettered_and_processed_messages_are_browsable(
    admin: httpx.AsyncClient,
) -> None:
    """The dead-lettered message waits in its dead-letter queue; processed ones stay browsable."""
    dead = (await admin.get("/queues/orders-dlq/messages", params={"status": "pending"})).json()
    assert [(m["content"], m["dead_lettered_from"]) for m in dead["messages"]] == [
        ({"order": 1}, "orders")
    ]
    done = (await admin.get("/queues/orders/messages", params={"status": "processed"})).json()
    assert sorted(m["content"]["order"] for m in done["messages"]) == [2, 5]


async def test_the_delayed_message_stays_delayed(admin: httpx.AsyncClient) -> None:
    """A message delayed by the old release keeps its delivery time."""
    response = await admin.get("/queues/orders/messages", params={"status": "pending"})
    delayed = [m for m in response.json()["messages"] if m["content"] == "later"]
    assert [m["deliver_at"] for m in delayed] == ["2999-01-01T00:00:00Z"]


async def test_users_keep_their_passwords_and_permissions(upgraded: BrokerServer) -> None:
    """The old release's user logs in with its password and keeps its permissions."""
    pair = await login(upgraded.url, "alice", EXPECTED["alice_password"])
    headers = {"Authorization": f"Bearer {pair['access_token']}"}
    async with httpx.AsyncClient(base_url=upgraded.url, headers=headers) as alice:
        allowed = await alice.post("/queues/orders/messages", json={"content": 1})
        denied = await alice.post("/queues/plain/messages", json={"content": 1})
    assert allowed.status_code == 201, allowed.text
    assert denied.status_code in (403, 404), denied.text


async def test_new_messages_never_reuse_an_old_id(admin: httpx.AsyncClient) -> None:
    """A message published after the upgrade gets an id past every stored one."""
    response = await admin.post("/queues/plain/messages", json={"content": "new"})
    assert response.status_code == 201, response.text
    assert response.json()["message_id"] > 9
