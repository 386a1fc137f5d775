"""A batch written as one statement (`storage.postgres.batches.one_statement`) and its wakes."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import pytest

from broker_core.journal import (
    AckOp,
    Change,
    DeadLetter,
    DeliverOp,
    Drop,
    Fail,
    Insert,
    PutQueue,
    Release,
    Requeue,
)
from broker_core.messages import Entry, QueueOptions
from storage import StorageUnavailable
from tests.storage.pg_database import reset_database

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from broker_core.journal import Op

asyncpg = pytest.importorskip("asyncpg", reason="the postgres backend needs asyncpg")

from storage.postgres import PostgresStorage, store as store_module  # noqa: E402
from storage.postgres.batches import one_statement, wakes  # noqa: E402
from storage.postgres.cluster import encode_change  # noqa: E402
from storage.rows import INSERT_COLUMNS, insert_row  # noqa: E402

pytestmark = pytest.mark.postgres

NOW = time.time()
COLUMNS = (
    "status, priority, attempt, redelivered, lease_deadline, settled_at, last_error, "
    "dead_lettered_from IS NULL, content, owner IS NULL"
)


@pytest.fixture
async def url(postgres_url: str) -> str:
    """The test run's database, emptied."""
    await reset_database(postgres_url)
    return postgres_url


@pytest.fixture
async def nodes(url: str) -> AsyncIterator[Callable[..., Awaitable[PostgresStorage]]]:
    """Opens storages (nodes) on the emptied database; closes them after the test."""
    opened: list[PostgresStorage] = []

    async def node(name: str = "n") -> PostgresStorage:
        storage = PostgresStorage(url, node_name=name, node_timeout_s=1.0)
        await storage.open()
        opened.append(storage)
        return storage

    yield node
    for storage in opened:
        await storage.close()


def entry(id: int, **fields: Any) -> Entry:
    return Entry(id, content=f"m{id}".encode(), size=2, created_at=NOW, **fields)


def life(base: int, queue: str) -> tuple[list[Op], list[Op]]:
    """Messages ``base + 1..`` published and claimed, then one batch of every kind of step."""
    setup: list[Op] = [PutQueue(queue, QueueOptions(), NOW, NOW)]
    setup += [Insert(queue, entry(base + i, priority=i % 2)) for i in range(1, 9)]
    batch: list[Op] = [
        DeliverOp(base + 1, 1, NOW + 30),
        AckOp(queue, base + 2, NOW + 1),
        AckOp(queue, base + 3, NOW + 2),  # acks of different instants in one shape
        Requeue(base + 4, 1, queue),
        Release(queue, base + 5, 1),
        Fail(queue, base + 6, "boom", NOW + 3),
        DeadLetter(base + 7, queue, "dlq", "maxlen"),
        Drop(base + 8),
        Insert(queue, entry(base + 9)),
        Insert(queue, entry(base + 10)),
        AckOp(queue, base + 10, NOW + 4),  # published and acked in the batch
    ]
    return setup, batch


async def rows(url: str, ids: range) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(url)
    try:
        found = await conn.fetch(
            f"SELECT id, {COLUMNS} FROM broker_messages WHERE id = ANY($1::bigint[]) ORDER BY id",
            list(ids),
        )
        processed = await conn.fetch("SELECT name, processed FROM broker_queues ORDER BY name")
    finally:
        await conn.close()
    return [tuple(row) for row in found] + [tuple(row) for row in processed]


async def test_one_statement_writes_what_the_transactional_path_writes(
    url: str, nodes: Callable[..., Awaitable[PostgresStorage]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every kind of message step in one batch ends in the same rows either way."""
    storage = await nodes()
    for base, queue in ((0, "a"), (100, "b")):
        setup, _ = life(base, queue)
        await storage.write(setup)
        assert len(await storage.claim(queue, 8, NOW)) == 8
    one, many = life(0, "a")[1], life(100, "b")[1]
    assert one_statement(one, storage.node.id, []) is not None, "the batch is one statement"
    await storage.write(one)
    monkeypatch.setattr(store_module, "one_statement", lambda *_: None)
    await storage.write(many)
    a, b = await rows(url, range(1, 11)), await rows(url, range(101, 111))
    # Same columns apart from the bodies (m1.. vs m101..) and the ids.
    assert [(*row[1:-2], row[-1]) for row in a[:-2]] == [(*row[1:-2], row[-1]) for row in b[:-2]]
    assert [row[0] for row in a[:-2]] == [1, 2, 3, 4, 5, 6, 7, 9, 10]
    assert a[-2:] == [("a", 3), ("b", 3)]


@pytest.mark.parametrize("path", ["one statement", "transaction"])
async def test_inserts_keep_every_column_whether_the_batch_shares_it_or_not(
    url: str,
    nodes: Callable[..., Awaitable[PostgresStorage]],
    monkeypatch: pytest.MonkeyPatch,
    path: str,
) -> None:
    """Columns all rows share go as one value, the rest as arrays: each row reads back whole.

    A batch of rows that differ in some columns and agree in others, then a
    lone row (every column shared, its id still an array).
    """
    storage = await nodes()
    if path == "transaction":
        monkeypatch.setattr(store_module, "one_statement", lambda *_: None)
    rich = dict(
        priority=3, headers={"k": "v"}, dedup_id="d", group="g", deliver_at=NOW + 60,
        expires_at=NOW + 600,
    )  # fmt: skip
    batch = [
        ("a", entry(1, **rich)),
        ("a", entry(2)),
        ("b", entry(3, priority=3, headers={"k": "v"})),
    ]
    lone = [("a", entry(4, **rich))]
    for ops in (batch, lone):
        await storage.write([Insert(queue, e) for queue, e in ops])
    conn = await asyncpg.connect(url)
    try:
        found = await conn.fetch(
            f"SELECT {', '.join(INSERT_COLUMNS)} FROM broker_messages ORDER BY id"
        )
    finally:
        await conn.close()
    assert [list(row) for row in found] == [insert_row(q, e) for q, e in batch + lone]


async def test_a_presumed_dead_node_writes_nothing_in_one_statement(
    url: str, nodes: Callable[..., Awaitable[PostgresStorage]]
) -> None:
    """A one-statement batch of a node marked dead is refused whole."""
    storage = await nodes()
    await storage.write([PutQueue("q", QueueOptions(), NOW, NOW)])
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("UPDATE broker_nodes SET dead = true WHERE id = $1", storage.node.id)
        with pytest.raises(StorageUnavailable, match="presumed dead"):
            await storage.write([Insert("q", entry(1))])
        assert await conn.fetchval("SELECT count(*) FROM broker_messages") == 0
    finally:
        await conn.close()


async def test_a_node_alone_wakes_itself_without_notify_and_notifies_once_joined(
    url: str, nodes: Callable[..., Awaitable[PostgresStorage]]
) -> None:
    """Alone, a node's message wakes skip NOTIFY; a second node is told from its join on."""
    payloads: list[str] = []
    conn = await asyncpg.connect(url)
    await conn.add_listener("wsbroker", lambda *args: payloads.append(args[-1]))
    try:
        a = await nodes("a")
        told_a: list[Change] = []
        a.watch(told_a.append)
        await a.write([PutQueue("q", QueueOptions(), NOW, NOW), Insert("q", entry(1))])
        assert Change("messages", "q") in told_a, "told at once, by itself"
        await asyncio.sleep(0.2)
        assert not [p for p in payloads if "\x1em\x1f" in p], "no message NOTIFY while alone"
        b = await nodes("b")
        told_b: list[Change] = []
        b.watch(told_b.append)
        deadline = time.monotonic() + 5
        while a.node.alone:
            assert time.monotonic() < deadline, "a is told of b's join"
            await asyncio.sleep(0.02)
        await a.write([Insert("q", entry(2))])
        deadline = time.monotonic() + 5
        while Change("messages", "q") not in told_b:
            assert time.monotonic() < deadline, "b is told of a's publish"
            await asyncio.sleep(0.02)
        assert told_a.count(Change("messages", "q")) == 2, "a's own NOTIFY is not told twice"
    finally:
        await conn.close()


def test_a_message_claimed_as_it_is_published_wakes_no_node() -> None:
    """Its publishing node holds it: a claimed `Insert` tells no ready message (its dedup id
    and an unclaimed neighbour still are)."""
    claimed = Insert("q", entry(1, dedup_id="k"), claimed=NOW + 30)
    assert wakes([claimed]) == [encode_change("d", "q", NOW, 1, "k")]
    assert wakes([claimed, Insert("r", entry(2))]) == [
        encode_change("m", "r"),
        encode_change("d", "q", NOW, 1, "k"),
    ]
