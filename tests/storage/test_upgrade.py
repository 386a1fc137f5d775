"""Data written by the previous release starts on this code with everything intact.

``tests/fixtures/datadir-0.1.0`` was made by ``tests/fixtures/make_datadir.py``
running against release 0.1.0 (commit eacd139): queues with options, messages
in every state (pending, delayed, processing at the stop, processed,
dead-lettered), a user with permissions. ``tests/fixtures/postgres-0.1.0.sql``
is the same run against a PostgreSQL database, dumped. Every schema change
must keep these tests passing, migrating the copy on start; a database from a
newer release is refused before anything is written to it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from storage.sqlite import SCHEMA_VERSION as SQLITE_VERSION
from tests.conftest import BrokerServer, ServerProcess, login, make_settings
from tests.storage.pg_database import temporary_database

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
FIXTURE = FIXTURES / "datadir-0.1.0"
EXPECTED: dict[str, dict[str, Any]] = {
    "sqlite": json.loads((FIXTURE / "expected.json").read_text()),
    "postgres": json.loads((FIXTURES / "postgres-0.1.0.json").read_text()),
}
TEN_YEARS_S = 10 * 365 * 24 * 3600.0


async def _sql(url: str, sql: str) -> Any:
    """Run ``sql`` on the database at ``url``: a script (``None``), or one query (its rows)."""
    import asyncpg

    conn = await asyncpg.connect(url, timeout=3)
    try:
        if sql.lstrip().upper().startswith("SELECT"):
            return await conn.fetch(sql)
        await conn.execute(sql)
        return None
    finally:
        await conn.close()


class Upgraded:
    """A broker started on the previous release's data, and what that release stored."""

    def __init__(self, server: BrokerServer, kind: str, url: str | None) -> None:
        self.server = server
        self.kind = kind
        self.url = url
        self.expected = EXPECTED[kind]

    async def versions(self) -> list[tuple[int, str | None]]:
        """The version table's rows: (version, release), in order."""
        if self.url is not None:
            rows = await _sql(self.url, "SELECT version, release FROM broker_schema_version")
            return sorted((row["version"], row["release"]) for row in rows)
        db = sqlite3.connect(self.server.settings.sqlite_path)
        try:
            return db.execute("SELECT version, release FROM schema_version ORDER BY 1").fetchall()
        finally:
            db.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def release(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Upgraded]:
    """A broker started on a copy of the previous release's data (SQLite data dir or dump)."""
    data = tmp_path / "data"
    url: str | None = None
    if request.param == "sqlite":
        shutil.copytree(FIXTURE, data, ignore=shutil.ignore_patterns("expected.json"))
        data.chmod(0o700)
        (data / "jwt.secret").chmod(0o600)
    else:
        url = request.getfixturevalue("fresh_postgres")
        await _sql(url, (FIXTURES / "postgres-0.1.0.sql").read_text())
    # No admin password from the environment: the stored hash must still work.
    # The fixture's processed messages were settled when it was made: keep them.
    settings = make_settings(
        data, admin_password=None, processed_retention_s=TEN_YEARS_S, storage_url=url
    )
    server = BrokerServer(settings)
    await server.start()
    try:
        yield Upgraded(server, request.param, url)
    finally:
        await server.stop()


@pytest.fixture
def fresh_postgres() -> Any:
    """An empty database of its own on the local PostgreSQL server (or a skip)."""
    with temporary_database() as url:
        yield url


@pytest.fixture
def upgraded(release: Upgraded) -> BrokerServer:
    """The broker started on the previous release's data."""
    return release.server


@pytest.fixture
async def admin(release: Upgraded) -> AsyncIterator[httpx.AsyncClient]:
    """The fixture's admin, logged in with the password the old release was given."""
    url = release.server.url
    pair = await login(url, "admin", release.expected["admin_password"])
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {pair['access_token']}"}
    ) as http:
        yield http


async def test_the_version_table_says_the_current_version(release: Upgraded) -> None:
    """After the start, the version table's newest row is this release's schema version."""
    from storage.postgres import SCHEMA_VERSION as POSTGRES_VERSION

    current = SQLITE_VERSION if release.kind == "sqlite" else POSTGRES_VERSION
    versions = await release.versions()
    assert [version for version, _ in versions] == list(range(1, current + 1))
    # The old release's steps have no release; the step this start applied has this one's.
    assert versions[0][1] is None
    assert versions[-1][1] is not None


async def test_every_queue_keeps_its_options_and_counts(
    release: Upgraded, admin: httpx.AsyncClient
) -> None:
    """Each queue comes back with its options and its messages counted by state."""
    queues = {queue["name"]: queue for queue in (await admin.get("/queues")).json()}
    assert set(queues) == set(release.expected["queues"])
    for name, expected in release.expected["queues"].items():
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
        # Options stored before retries existed take their defaults.
        assert (queue["retry"], queue["paused"], queue["paused_until"]) == (None, False, None)
        # ... and before message groups.
        assert (queue["group_concurrency"], queue["single_active_consumer"]) == (1, False)


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
    release: Upgraded, admin: httpx.AsyncClient
) -> None:
    """The message leased when the old release stopped is delivered again, marked so."""
    by_id = {m["message_id"]: m for m in await _consume_all(admin, "orders")}
    again = by_id[release.expected["processing_message_id"]]
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


async def test_an_upgraded_broker_routes_through_new_topics(admin: httpx.AsyncClient) -> None:
    """The topics tables come with the migration: a topic binds an old queue and routes."""
    queue = (await admin.get("/queues")).json()[0]["name"]
    assert (await admin.post("/topics", json={"name": "upgraded"})).status_code == 201
    bound = await admin.post("/topics/upgraded/bindings", json={"queue": queue, "pattern": "#"})
    assert bound.status_code == 201, bound.text
    published = await admin.post(
        "/topics/upgraded/publish", json={"routing_key": "a", "content": 1}
    )
    assert [r["queue"] for r in published.json()["routed"]] == [queue]


async def test_users_keep_their_passwords_and_permissions(release: Upgraded) -> None:
    """The old release's user logs in with its password and keeps its permissions."""
    upgraded = release.server
    pair = await login(upgraded.url, "alice", release.expected["alice_password"])
    headers = {"Authorization": f"Bearer {pair['access_token']}"}
    async with httpx.AsyncClient(base_url=upgraded.url, headers=headers) as alice:
        allowed = await alice.post("/queues/orders/messages", json={"content": 1})
        denied = await alice.post("/queues/plain/messages", json={"content": 1})
    assert allowed.status_code == 201, allowed.text
    assert denied.status_code in (403, 404), denied.text


async def test_service_tokens_work_on_an_upgraded_database(
    release: Upgraded, admin: httpx.AsyncClient
) -> None:
    """The migration adds the service token table: a token made after the upgrade works."""
    created = await admin.post("/tokens", json={"name": "prom", "scopes": ["metrics:read"]})
    assert created.status_code == 201, created.text
    headers = {"Authorization": f"Bearer {created.json()['token']}"}
    async with httpx.AsyncClient(base_url=release.server.url, headers=headers) as machine:
        assert (await machine.get("/metrics")).status_code == 200


async def test_new_messages_never_reuse_an_old_id(admin: httpx.AsyncClient) -> None:
    """A message published after the upgrade gets an id past every stored one."""
    stored: list[int] = []
    for queue in ("orders", "orders-dlq", "plain"):
        browse = await admin.get(f"/queues/{queue}/messages", params={"limit": 100})
        stored.extend(m["message_id"] for m in browse.json()["messages"])
    response = await admin.post("/queues/plain/messages", json={"content": "new"})
    assert response.status_code == 201, response.text
    assert len(stored) == 9
    assert response.json()["message_id"] > max(stored)


async def test_an_old_queue_takes_schedules(admin: httpx.AsyncClient) -> None:
    """The schedules table (SQLite step 3, PostgreSQL schema 4) serves the old queues."""
    body = {"name": "nightly", "cron": "0 3 * * *", "content": {"job": "report"}}
    response = await admin.post("/queues/plain/schedules", json=body)
    assert response.status_code == 201, response.text
    listed = (await admin.get("/queues/plain/schedules")).json()
    assert [(s["name"], s["paused"]) for s in listed] == [("nightly", False)]
    paused = await admin.patch("/queues/plain/schedules/nightly", json={"paused": True})
    assert paused.json()["paused"] is True
    assert (await admin.delete("/queues/plain/schedules/nightly")).status_code == 204
    assert (await admin.get("/queues/plain/schedules")).json() == []


async def test_old_messages_have_no_group_and_new_ones_keep_theirs(
    admin: httpx.AsyncClient,
) -> None:
    """Stored messages read back without a group; a grouped publish after the upgrade keeps it."""
    browse = (await admin.get("/queues/plain/messages", params={"limit": 100})).json()
    assert all(m["group"] is None for m in browse["messages"])
    response = await admin.post("/queues/plain/messages", json={"content": 1, "group": "g"})
    assert response.status_code == 201, response.text
    view = await admin.get(f"/queues/plain/messages/{response.json()['message_id']}")
    assert view.json()["group"] == "g"


async def test_old_messages_get_a_history_and_a_result_after_the_upgrade(
    admin: httpx.AsyncClient,
) -> None:
    """An old message has an empty history; acked after the upgrade, it gets events and a result."""
    browse = await admin.get("/queues/plain/messages", params={"status": "pending"})
    old = browse.json()["messages"][0]["message_id"]
    history = await admin.get(f"/messages/{old}/history")
    assert history.status_code == 200, history.text
    assert history.json()["events"] == []
    leased = await admin.get("/queues/plain/messages/consume", params={"max": 1000})
    ids = [m["message_id"] for m in leased.json()["messages"]]
    assert old in ids
    assert (await admin.post(f"/messages/{old}/ack", json={"result": "done"})).status_code == 200
    result = await admin.get(f"/messages/{old}/result")
    assert result.json()["result"] == "done"
    events = (await admin.get(f"/messages/{old}/history")).json()["events"]
    assert [e["event"] for e in events] == ["delivered", "acked"]


# -- a newer release's data ----------------------------------------------------------------------

NEWER = (
    "was written by a newer release (schema 99; this release knows up to {}): upgrade the broker"
)


def _digest(folder: Path) -> tuple[str, int]:
    """The database's hash and its WAL's size (a read-only check may create an empty WAL)."""
    wal = folder / "broker.db-wal"
    return (
        hashlib.sha256((folder / "broker.db").read_bytes()).hexdigest(),
        wal.stat().st_size if wal.exists() else 0,
    )


async def test_serve_refuses_a_sqlite_database_from_a_newer_release(
    tmp_path: Path, server_process_factory: Any
) -> None:
    """``broker serve`` exits non-zero, saying so, and leaves a newer release's file as it was."""
    data = tmp_path / "data"
    shutil.copytree(FIXTURE, data, ignore=shutil.ignore_patterns("expected.json"))
    db = sqlite3.connect(data / "broker.db")
    db.execute("PRAGMA user_version=99")
    db.close()
    before = _digest(data)
    broker: ServerProcess = server_process_factory(data)
    with pytest.raises(RuntimeError) as caught:
        await broker.start()
    assert f"the database at {data / 'broker.db'} " in str(caught.value)
    assert NEWER.format(SQLITE_VERSION) in str(caught.value)
    assert _digest(data) == before


async def test_serve_refuses_a_postgres_database_from_a_newer_release(
    tmp_path: Path, fresh_postgres: str, server_process_factory: Any
) -> None:
    """``broker serve --storage postgresql://...`` exits non-zero on a newer release's schema."""
    from storage.postgres import SCHEMA_VERSION as POSTGRES_VERSION

    await _sql(fresh_postgres, (FIXTURES / "postgres-0.1.0.sql").read_text())
    await _sql(fresh_postgres, "INSERT INTO public.broker_schema_version VALUES (99)")
    broker: ServerProcess = server_process_factory(BROKER_STORAGE_URL=fresh_postgres)
    with pytest.raises(RuntimeError) as caught:
        await broker.start()
    assert NEWER.format(POSTGRES_VERSION) in str(caught.value)
    rows = await _sql(fresh_postgres, "SELECT version FROM public.broker_schema_version")
    assert sorted(row["version"] for row in rows) == [2, 99]


async def test_the_webhooks_table_exists_after_the_upgrade(release: Upgraded) -> None:
    """The webhooks step (issue 27) ran: a webhook is stored, read back and deleted."""
    store = release.server.ctx.storage.webhooks
    assert await store.list_webhooks() == []
    await store.put_webhook("wh_1", "q", b'{"id": "wh_1"}')
    assert await store.list_webhooks() == [b'{"id": "wh_1"}']
    assert await store.delete_webhook("wh_1")
    assert not await store.delete_webhook("wh_1")


async def test_the_sqlite_settled_index_is_dropped(release: Upgraded) -> None:
    """Step 10: the upgraded file has no index by settled time (every ack rewrote a page of it)."""
    if release.kind != "sqlite":
        pytest.skip("SQLite's schema step")
    db = sqlite3.connect(release.server.settings.sqlite_path)
    try:
        names = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    finally:
        db.close()
    assert {"messages_settled", "messages_by_queue"}.isdisjoint(names)
    assert {"messages_ready", "messages_processed", "messages_failed"} <= names


async def test_an_old_message_cancelled_after_the_upgrade_ends_with_its_history(
    release: Upgraded, admin: httpx.AsyncClient
) -> None:
    """Step 11 / schema 10: a cancelled old message keeps an ended row, counted nowhere."""
    before = (await admin.get("/queues/plain")).json()
    browse = await admin.get("/queues/plain/messages", params={"status": "pending"})
    old = browse.json()["messages"][0]["message_id"]
    assert (await admin.delete(f"/queues/plain/messages/{old}")).status_code == 204
    events = (await admin.get(f"/messages/{old}/history")).json()["events"]
    assert [e["event"] for e in events] == ["cancelled"]
    ended = (await admin.get(f"/queues/plain/messages/{old}")).json()
    assert (ended["status"], ended["last_error"], ended["content"]) == ("ended", "cancelled", None)
    after = (await admin.get("/queues/plain")).json()
    assert after["pending"] == before["pending"] - 1
    assert (after["processed"], after["failed"]) == (before["processed"], before["failed"])
    listed = (await admin.get("/queues/plain/messages", params={"limit": 1000})).json()
    assert old not in {m["message_id"] for m in listed["messages"]}
    if release.url is not None:
        [row] = await _sql(
            release.url,
            "SELECT col_description(attrelid, attnum) AS comment FROM pg_attribute "
            "WHERE attrelid = 'broker_messages'::regclass AND attname = 'status'",
        )
        assert "4 ended" in row["comment"]
        return
    db = sqlite3.connect(release.server.settings.sqlite_path)
    try:
        names = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    finally:
        db.close()
    assert "messages_ended" in names
