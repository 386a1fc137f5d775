"""What only the PostgreSQL backend does: nodes sharing a database, server errors, schema, size."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from broker_core.history import decode
from broker_core.journal import AckOp, Change, DeliverOp, Insert, PutQueue, Trim
from broker_core.messages import Entry, QueueOptions
from broker_core.settings import Settings
from broker_core.types import MessageStatus
from storage import (
    StorageCorrupt,
    StorageUnavailable,
    StorageUnreachable,
    storage_from_settings,
)
from tests.storage.pg_database import reset_database

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from pathlib import Path

asyncpg = pytest.importorskip("asyncpg", reason="the postgres backend needs asyncpg")

from storage.postgres import SCHEMA_VERSION, PostgresStorage, check_postgres  # noqa: E402

pytestmark = pytest.mark.postgres

NOW = time.time()
TIMEOUT_S = 1.0


@pytest.fixture
async def url(postgres_url: str) -> str:
    """The test run's database, emptied."""
    await reset_database(postgres_url)
    return postgres_url


@pytest.fixture
async def nodes(url: str) -> AsyncIterator[Callable[..., Awaitable[PostgresStorage]]]:
    """Opens storages (nodes) on the emptied database; closes those still open after the test."""
    opened: list[PostgresStorage] = []

    async def node(name: str = "n", **options: object) -> PostgresStorage:
        storage = PostgresStorage(url, node_name=name, node_timeout_s=TIMEOUT_S, **options)  # type: ignore[arg-type]
        await storage.open()
        opened.append(storage)
        return storage

    yield node
    for storage in opened:
        await storage.close()  # nothing to do for a closed or crashed one


@pytest.fixture
async def storage(nodes: Callable[..., Awaitable[PostgresStorage]]) -> PostgresStorage:
    """One open node."""
    return await nodes()


def entry(id: int, priority: int = 0, **fields: Any) -> Entry:
    return Entry(id, content=b"{}", size=2, created_at=NOW, priority=priority, **fields)


async def until(condition: Callable[[], Awaitable[bool]], what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.05)


async def published(storage: PostgresStorage, *entries: Entry, queue: str = "q") -> None:
    await storage.write(
        [PutQueue(queue, QueueOptions(), NOW, NOW), *(Insert(queue, e) for e in entries)]
    )


# -- nodes sharing one database ---------------------------------------------------------------


async def test_nodes_get_their_own_identity_and_slot(
    nodes: Callable[..., Awaitable[PostgresStorage]],
) -> None:
    """Each node has a row of its own: distinct ids and slots; a leaving node frees its row."""
    a, b = await nodes("a"), await nodes("b")
    assert a.node.id != b.node.id
    assert {a.node_slot, b.node_slot} == {0, 1}
    assert (a.node_name, b.node_name) == ("a", "b")
    await a.close()
    c = await nodes("c")
    assert c.node_slot == a.node_slot


async def test_claims_of_two_nodes_are_disjoint_and_in_delivery_order(
    nodes: Callable[..., Awaitable[PostgresStorage]],
) -> None:
    """Concurrent claims never lease one message twice; each comes by priority, then id."""
    a, b = await nodes("a"), await nodes("b")
    await published(a, *(entry(i, priority=i % 3) for i in range(1, 301)))
    first, second = await asyncio.gather(a.claim("q", 200, NOW), b.claim("q", 200, NOW))
    ids = [e.id for e in first] + [e.id for e in second]
    assert sorted(ids) == list(range(1, 301))
    for claimed in (first, second):
        keys = [(-e.priority, e.id) for e in claimed]
        assert keys == sorted(keys)
        assert all(e.content == b"{}" and e.attempt == 0 for e in claimed)
    assert await a.claim("q", 10, NOW) == []


async def test_claims_skip_delayed_and_expired_messages(storage: PostgresStorage) -> None:
    """A claim takes only what is due and not expired."""
    await published(
        storage,
        entry(1, deliver_at=NOW + 60),
        entry(2, expires_at=NOW - 1),
        entry(3),
    )
    assert [e.id for e in await storage.claim("q", 10, NOW, lease_s=45)] == [3]
    assert [e.id for e in await storage.claim("q", 10, NOW + 61)] == [1]
    held = await storage.get_message(3)
    assert held is not None
    assert (held.status.label, held.entry.lease_deadline) == ("processing", NOW + 45)


async def test_a_node_cannot_settle_what_another_node_holds(
    nodes: Callable[..., Awaitable[PostgresStorage]],
) -> None:
    """Writes are fenced: B's ack of a message A claimed changes nothing."""
    a, b = await nodes("a"), await nodes("b")
    await published(a, entry(1))
    [claimed] = await a.claim("q", 1, NOW)
    await b.write([AckOp("q", claimed.id, NOW)])
    row = await b.get_message(1)
    assert row is not None
    assert row.status.label == "processing"
    await a.write([DeliverOp(1, 1, NOW + 30), AckOp("q", 1, NOW)])
    row = await b.get_message(1)
    assert row is not None
    assert row.status.label == "processed"


async def test_settle_elsewhere_takes_over_another_nodes_lease(
    nodes: Callable[..., Awaitable[PostgresStorage]],
) -> None:
    """settle_elsewhere acks a message another node holds, and only held ones."""
    a, b = await nodes("a"), await nodes("b")
    await published(a, entry(1), entry(2))
    [claimed] = await a.claim("q", 1, NOW)
    done = await b.settle_elsewhere(
        [claimed.id, 2], lambda held: AckOp(held.queue, held.entry.id, NOW)
    )
    assert done == [("q", claimed.id)]
    counts = await b.counts(["q"])
    assert (counts["q"].processed, counts["q"].pending, counts["q"].processing) == (1, 1, 0)


async def test_a_crashed_nodes_leases_come_back_redelivered(
    nodes: Callable[..., Awaitable[PostgresStorage]],
) -> None:
    """Once a silent node is presumed dead, the reaper requeues what it held, redelivered."""
    a, b = await nodes("a"), await nodes("b")
    await published(a, entry(1), entry(2))
    assert len(await a.claim("q", 2, NOW)) == 2
    crashed = a.node.id
    await a.crash()
    # Still a's until it is presumed dead: nothing to claim yet.
    assert await b.claim("q", 10, time.time()) == []

    async def back() -> bool:
        return len(await b.claim("q", 10, time.time())) == 2

    await until(back, "the leases come back", seconds=TIMEOUT_S * 10)
    dead = await b.pool.fetchval("SELECT dead FROM broker_nodes WHERE id = $1", crashed)
    assert dead is True, "given back because the node was presumed dead"
    for id in (1, 2):
        row = await b.get_message(id)
        assert row is not None
        assert row.entry.redelivered is True


@pytest.mark.parametrize("batch", ["one statement", "transaction"])
async def test_a_message_claimed_as_it_is_published_is_held_until_its_node_dies(
    nodes: Callable[..., Awaitable[PostgresStorage]], batch: str
) -> None:
    """An `Insert` claimed by its node is written processing and owned by it: no other node
    claims it; after a crash between its commit and its delivery it comes back redelivered.
    """
    a, b = await nodes("a"), await nodes("b")
    ops: list[Any] = [Insert("q", entry(1), claimed=NOW + 600), Insert("q", entry(2))]
    if batch == "transaction":
        ops.insert(0, PutQueue("q", QueueOptions(), NOW, NOW))  # a queue-level step: `apply`
    else:
        await a.write([PutQueue("q", QueueOptions(), NOW, NOW)])
    await a.write(ops)
    row = await b.get_message(1)
    assert row is not None
    assert (row.status.label, row.entry.attempt, row.entry.lease_deadline) == (
        "processing",
        1,
        NOW + 600,
    )
    owner = await b.pool.fetchval("SELECT owner FROM broker_messages WHERE id = 1")
    assert owner == a.node.id
    assert [e.id for e in await b.claim("q", 10, time.time())] == [2]
    crashed = a.node.id
    await a.crash()

    async def back() -> bool:
        return [e.id for e in await b.claim("q", 10, time.time())] == [1]

    await until(back, "the claimed message comes back", seconds=TIMEOUT_S * 10)
    dead = await b.pool.fetchval("SELECT dead FROM broker_nodes WHERE id = $1", crashed)
    assert dead is True, "given back because its node was presumed dead"
    row = await b.get_message(1)
    assert row is not None
    assert (row.entry.redelivered, row.entry.attempt) == (True, 2)


async def test_a_node_presumed_dead_writes_nothing_then_rejoins(
    url: str, nodes: Callable[..., Awaitable[PostgresStorage]]
) -> None:
    """A node marked dead is refused at its next batch, then takes a new identity."""
    a = await nodes("a")
    old = a.node.id
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("UPDATE broker_nodes SET dead = true WHERE id = $1", old)
    finally:
        await conn.close()
    with pytest.raises(StorageUnavailable, match="presumed dead"):
        await a.write([PutQueue("q", QueueOptions(), NOW, NOW)])

    async def rejoined() -> bool:
        return a.node.id != old and a.degraded is None

    await until(rejoined, "the node rejoins and its batch commits")
    assert [q.name for q in await a.load_queues()] == ["q"]


async def test_every_node_is_told_of_ready_messages_and_changes(
    nodes: Callable[..., Awaitable[PostgresStorage]],
) -> None:
    """Commits notify every node: ready and delayed messages, dedup ids, queue and user changes."""
    a, b = await nodes("a"), await nodes("b")
    told: list[Change] = []
    b.watch(told.append)
    key = "order\x1f7"  # a dedup_id may hold the payload's separator
    await published(a, entry(1), entry(2, deliver_at=NOW + 60), entry(3, dedup_id=key))
    await a.accounts.put_user("carol", b"{}")
    expected = {
        Change("queue", "q"),
        Change("messages", "q"),
        Change("messages", "q", NOW + 60),
        Change("dedup", "q", NOW, 3, key),
        Change("user", "carol"),
    }

    async def all_told() -> bool:
        return expected <= set(told)

    await until(all_told, "b is told")
    assert await b.recent_dedup("q", NOW - 1) == [(key, 3, NOW)]
    assert await b.recent_dedup("q", NOW) == []


async def test_the_reaper_expires_pending_messages(storage: PostgresStorage) -> None:
    """Pending messages past their TTL go to the dead-letter queue, or end (kept, body-less)."""
    await storage.write(
        [
            PutQueue("dlq", QueueOptions(), NOW, NOW),
            PutQueue("q", QueueOptions(dead_letter_queue="dlq"), NOW, NOW),
            PutQueue("plain", QueueOptions(), NOW, NOW),
            Insert("q", entry(1, expires_at=NOW - 1)),
            Insert("plain", entry(2, expires_at=NOW - 1)),
            # From the clock, not NOW: a slow run may pass NOW + a few minutes.
            Insert("plain", entry(3, expires_at=time.time() + 3600)),
        ]
    )
    await storage.node.reap(time.time())
    moved = await storage.get_message(1)
    assert moved is not None
    assert (moved.queue, moved.entry.dead_lettered_from) == ("dlq", "q")
    ended = await storage.get_message(2)
    assert ended is not None
    assert (ended.status, ended.entry.last_error) == (MessageStatus.ENDED, "expired")
    stored = await storage.history(2)
    assert stored is not None
    assert [e.event for e in decode(stored[1], stored[0])][-1] == "expired"
    assert [m.entry.id for m in await storage.browse("plain", None, 10, None)] == [3]
    assert (await storage.counts(["plain"]))["plain"].pending == 1
    assert await storage.get_message(3) is not None


async def test_trim_drops_or_dead_letters_the_oldest_pending(storage: PostgresStorage) -> None:
    """drop_head's Trim takes the oldest pending messages by count, then by bytes."""
    await storage.write(
        [
            PutQueue("dlq", QueueOptions(), NOW, NOW),
            PutQueue("q", QueueOptions(), NOW, NOW),
            *(Insert("q", entry(i)) for i in range(1, 8)),
        ]
    )
    [held] = await storage.claim("q", 1, NOW)  # processing: never trimmed
    await storage.write([Trim("q", 2, 0, None)])
    await storage.write([Trim("q", 0, 3, "dlq")])  # 2-byte bodies: two messages
    remaining = await storage.browse("q", MessageStatus.PENDING, 10, None)
    assert [m.entry.id for m in remaining] == [6, 7]
    moved = await storage.browse("dlq", None, 10, None)
    assert [(m.entry.id, m.entry.last_error) for m in moved] == [(4, "maxlen"), (5, "maxlen")]
    assert held.id == 1
    dropped = await storage.get_message(2)
    assert dropped is not None
    assert (dropped.status, dropped.entry.last_error) == (MessageStatus.ENDED, "maxlen")
    stored = await storage.history(2)
    assert stored is not None
    assert [e.event for e in decode(stored[1], stored[0])][-1] == "dropped"
    counts = (await storage.counts(["q"]))["q"]
    assert (counts.pending, counts.processing, counts.failed) == (2, 1, 0)


async def test_the_jwt_secret_is_made_once_for_every_node(
    nodes: Callable[..., Awaitable[PostgresStorage]],
) -> None:
    """shared_secret keeps the first node's value."""
    a, b = await nodes("a"), await nodes("b")
    assert await a.shared_secret("k", lambda: "first") == "first"
    assert await b.shared_secret("k", lambda: "second") == "first"


async def test_unreachable_server_is_one_line_without_the_password() -> None:
    """A server that doesn't answer raises StorageUnreachable, one line, no password."""
    storage = PostgresStorage("postgresql://bob:s3cret@127.0.0.1:1/broker?password=s3cret")
    with pytest.raises(StorageUnreachable) as caught:
        await storage.open()
    message = str(caught.value)
    assert "\n" not in message
    assert "s3cret" not in message
    assert "postgresql://bob@127.0.0.1:1/broker" in message


async def test_open_records_the_schema_version(url: str, storage: PostgresStorage) -> None:
    """A fresh database gets the schema and the current version in broker_schema_version."""
    conn = await asyncpg.connect(url)
    try:
        assert (
            await conn.fetchval("SELECT max(version) FROM broker_schema_version") == SCHEMA_VERSION
        )
    finally:
        await conn.close()


async def test_check_postgres_refuses_an_unknown_schema_version(url: str) -> None:
    """The preflight refuses a database whose schema is from a future version."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "CREATE TABLE broker_schema_version (version integer NOT NULL); "
            f"INSERT INTO broker_schema_version VALUES ({SCHEMA_VERSION + 1})"
        )
    finally:
        await conn.close()
    with pytest.raises(StorageCorrupt):
        await check_postgres(url)


async def test_size_bytes_grows_with_the_data(
    nodes: Callable[..., Awaitable[PostgresStorage]],
) -> None:
    """size_bytes is the tables' total size, refreshed in the background once stale."""
    storage = await nodes(size_ttl_s=0.0)  # every read is stale: each one refreshes
    before = storage.size_bytes()
    assert before > 0
    body = b"x" * 2000
    await storage.write(
        [
            PutQueue("q", QueueOptions(), NOW, NOW),
            *(
                Insert("q", Entry(i, content=body, size=len(body), created_at=NOW))
                for i in range(1, 501)
            ),
        ]
    )

    async def grown() -> bool:
        return storage.size_bytes() > before

    await until(grown, "the size is refreshed")


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_settings_with_a_postgres_url_build_postgres_storage(scheme: str, tmp_path: Path) -> None:
    """Both URL schemes select the PostgreSQL backend, with the write-behind settings."""
    settings = Settings(
        data_dir=tmp_path,
        storage_url=f"{scheme}://postgres@127.0.0.1:5432/test",
        flush_max_ops=64,
    )
    storage = storage_from_settings(settings)
    assert isinstance(storage, PostgresStorage)
    assert storage.name == "postgres"
    assert storage.writer.max_batch == 64


async def test_counting_while_publishing_keeps_the_publishes(url: str) -> None:
    """A count read while a node publishes doesn't lose those publishes from its limit figure."""
    from broker_core.broker import Broker
    from broker_core.claims import SharedQueueState
    from broker_core.messages import CreateQueueRequest, PublishRequest

    broker = Broker(PostgresStorage(url, node_name="n", node_timeout_s=TIMEOUT_S))
    await broker.start()
    try:
        await broker.create_queue(CreateQueueRequest(name="q", max_length=1000))
        request = PublishRequest(content=msgspec.Raw(b"1"))
        for _ in range(20):
            await asyncio.gather(broker.sync_counts(["q"]), broker.publish("q", [request]))
        state = broker.actor("q").state
        assert isinstance(state, SharedQueueState)
        # A publish committed between the mark and storage's read may be counted
        # twice until the next count (at most one second): never lost, which is
        # what keeps a limit from being overrun; a quiet count is exact.
        assert 20 <= state.stored_pending <= 40
        await broker.sync_counts(["q"])
        assert state.stored_pending == broker.info("q").pending == 20
    finally:
        await broker.close()


def test_a_push_delivery_line_waits_with_the_acks_a_pull_commits_at_once() -> None:
    """`settles`: a pulled message may be acked over another node's REST API at once."""
    from broker_core.history import record
    from storage.postgres.store import settles

    push = record([DeliverOp(1, 1, 30.0, consumer=7, created=1.0)], 2.0)
    pull = record([DeliverOp(2, 1, 30.0, consumer=None, created=1.0)], 2.0)
    both = record([DeliverOp(1, 1, 30.0, 7, 1.0), DeliverOp(2, 1, 30.0, None, 1.0)], 2.0)
    assert push is not None and pull is not None and both is not None
    assert settles(push)
    assert not settles(pull)
    assert not settles(both)
    assert settles(AckOp("jobs", 1, 2.0))
