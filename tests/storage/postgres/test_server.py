"""The real server on PostgreSQL: REST publish, consume and ack, and a restart that keeps it all."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.conftest import login
from tests.storage.pg_database import reset_database
from transports.cli import main

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import BrokerServer

pytestmark = pytest.mark.postgres


@pytest.fixture
async def settings_overrides(postgres_url: str) -> dict[str, Any]:
    """Serve from PostgreSQL, on the run's test database emptied for this test."""
    await reset_database(postgres_url)
    return {"storage_url": postgres_url}


def _client(server: BrokerServer, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


async def test_publish_consume_ack_and_restart_on_postgres(server: BrokerServer) -> None:
    """Messages, acks, in-flight leases and users are in PostgreSQL across a restart."""
    async with _client(server, (await login(server.url))["access_token"]) as http:
        assert (await http.post("/queues", json={"name": "jobs", "max_attempts": 4})).status_code
        published = await http.post(
            "/queues/jobs/messages/batch",
            json={"messages": [{"content": {"n": n}} for n in range(3)]},
        )
        assert published.status_code == 201, published.text
        ids = [m["message_id"] for m in published.json()["messages"]]
        consumed = await http.get("/queues/jobs/messages/consume", params={"max": 2})
        assert consumed.status_code == 200, consumed.text
        first, second = consumed.json()["messages"]
        assert [first["message_id"], second["message_id"]] == ids[:2]
        acked = await http.post(f"/messages/{first['message_id']}/ack")
        assert acked.status_code == 200, acked.text
        stats = (await http.get("/stats")).json()
        assert stats["broker_specific"]["storage"]["backend"] == "postgres"

    await server.restart()  # clean stop: the second message was still processing

    async with _client(server, (await login(server.url))["access_token"]) as http:
        info = (await http.get("/queues/jobs")).json()
        assert (info["pending"], info["processing"], info["processed"]) == (2, 0, 1)
        assert info["max_attempts"] == 4
        again = await http.get("/queues/jobs/messages/consume", params={"max": 10})
        assert again.status_code == 200, again.text
        messages = again.json()["messages"]
        assert [m["message_id"] for m in messages] == ids[1:]
        assert [(m["redelivered"], m["attempt"]) for m in messages] == [(True, 2), (False, 1)]
        assert messages[1]["content"] == {"n": 2}
        settled = await http.post("/messages/ack", json={"ids": ids[1:]})
        assert settled.status_code == 200, settled.text
        processed = await http.get("/queues/jobs/messages", params={"status": "processed"})
        assert [m["message_id"] for m in processed.json()["messages"]] == ids


def test_serve_without_a_postgres_server_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``broker serve --storage postgresql://...`` with no server answering exits 1, one line."""
    url = "postgresql://postgres:pw@127.0.0.1:1/broker"
    argv = ["serve", "--storage", url, "--data-dir", str(tmp_path), "--no-tls"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("broker: database postgresql://postgres@127.0.0.1:1/broker cannot be")
    assert "pw" not in err.split("@", 1)[0]
