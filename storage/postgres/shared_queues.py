"""What nodes that share queues ask of the database beyond the journal.

The database, not the node, owns the pending order and the leases
(`broker_core.journal.SharedStorage`): a node's actor claims ready messages
for its consumers (``FOR UPDATE SKIP LOCKED``, in delivery order), reads
counts over every node's messages, and settles or touches messages that
another node holds. Every write here holds this node's row
(`ClusterNode.fence`) or refuses, as the batches do.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from broker_core.journal import QueueCounts

from ..rows import ENTRY_COLUMNS, stored_message
from .batches import apply, wakes
from .cluster import encode_change, notify
from .reads import SELECT_MESSAGES

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from broker_core.journal import Op, StoredMessage
    from broker_core.messages import Entry

    from .cluster import ClusterNode

__all__ = [
    "claim",
    "counts",
    "recent_dedup",
    "settle_elsewhere",
    "shared_secret",
    "touch_elsewhere",
]

_CLAIM = (
    # One statement, one round trip: hold this node's row (a node presumed
    # dead claims nothing), take the first ready messages no one else is
    # taking, and mark them processing and ours.
    "WITH me AS (SELECT id FROM broker_nodes WHERE id = $3 AND NOT dead FOR SHARE), "
    "ready AS (SELECT id FROM broker_messages WHERE queue = $1 AND status = 0 "
    "AND deliver_at <= $4 AND (expires_at = 0 OR expires_at > $4) AND EXISTS (SELECT 1 FROM me) "
    # A group's message only when fewer than group_concurrency ($6) earlier ones
    # of its group are pending or processing on any node. A claim moves a row
    # from 0 to 1, so a concurrent claim's snapshot counts it either way: no two
    # nodes can take the same group past its limit, and SKIP LOCKED settles who
    # takes a head both see. A back-off (attempt > 0, due later) holds its
    # group; a delayed publish (attempt 0, due later) does not.
    "AND (msg_group IS NULL OR (SELECT count(*) FROM (SELECT 1 FROM broker_messages e "
    "WHERE e.queue = $1 AND e.msg_group = broker_messages.msg_group "
    "AND e.id < broker_messages.id AND e.status <= 1 "
    "AND NOT (e.attempt = 0 AND e.deliver_at > $4) LIMIT $6) AS earlier) < $6) "
    "ORDER BY priority DESC, id LIMIT $2 FOR UPDATE SKIP LOCKED) "
    # The delivery is counted here (a crash before the node writes anything
    # still counts it); the entry comes back as it was, the actor counts it again.
    "UPDATE broker_messages AS m SET status = 1, owner = $3, lease_deadline = $5, "
    "attempt = m.attempt + 1, redelivered = m.redelivered OR m.attempt > 0 "
    "FROM ready WHERE m.id = ready.id RETURNING "
    + ", ".join("m.attempt - 1" if c == "attempt" else f"m.{c}" for c in ENTRY_COLUMNS)
)


async def claim(
    pool: Any,
    node: int,
    queue: str,
    count: int,
    now: float,
    lease_s: float,
    group_concurrency: int = 1,
) -> list[Entry]:
    """Lease up to ``count`` ready messages of ``queue`` to node ``node``, in delivery order."""
    rows = await pool.fetch(_CLAIM, queue, count, node, now, now + lease_s, group_concurrency)
    entries = [stored_message(row).entry for row in rows]
    entries.sort(key=lambda entry: (-entry.priority, entry.id))
    return entries


async def recent_dedup(pool: Any, queue: str, since: float) -> list[tuple[str, int, float]]:
    """``(dedup_id, id, created_at)`` of the messages of ``queue`` published since ``since``."""
    rows = await pool.fetch(
        "SELECT dedup_id, id, created_at FROM broker_messages "
        "WHERE queue = $1 AND dedup_id IS NOT NULL AND created_at > $2",
        queue,
        since,
    )
    return [(str(key), int(id), float(at)) for key, id, at in rows]


async def counts(pool: Any, queues: Sequence[str]) -> dict[str, QueueCounts]:
    """Message counts of ``queues``, all nodes' messages (processed from the counter)."""
    names = list(queues)
    rows = await pool.fetch(
        "SELECT queue, status, count(*), coalesce(sum(size), 0)::bigint, "
        "count(*) FILTER (WHERE deliver_at > $2) FROM broker_messages "
        "WHERE queue = ANY($1::text[]) AND status IN (0, 1, 3) GROUP BY queue, status",
        names,
        time.time(),
    )
    found: dict[str, dict[str, int]] = {name: {} for name in names}
    for queue, status, count, size, delayed in rows:
        queue_counts = found[queue]
        if status == 0:
            queue_counts.update(pending=count, pending_bytes=size, delayed=delayed)
        elif status == 1:
            queue_counts["processing"] = count
        else:
            queue_counts["failed"] = count
    for name, processed in await pool.fetch(
        "SELECT name, processed FROM broker_queues WHERE name = ANY($1::text[])", names
    ):
        found[name]["processed"] = processed
    return {name: QueueCounts(**found_counts) for name, found_counts in found.items()}


async def settle_elsewhere(
    conn: Any,
    node: ClusterNode,
    ids: Sequence[int],
    outcome: Callable[[StoredMessage], Op | None],
    record: Callable[[Sequence[Op]], Op | None] | None = None,
) -> list[tuple[str, int]]:
    """Settle messages that other nodes hold, in ``conn``'s open transaction.

    The rows are taken over by this node first (so the write's fence lets
    them through), then settled like this node's own, with the history
    lines ``record`` makes of it; their holders' later writes about them
    are fenced out.
    """
    rows = await conn.fetch(
        f"{SELECT_MESSAGES} WHERE id = ANY($1::bigint[]) AND status = 1 ORDER BY id FOR UPDATE",
        list(ids),
    )
    held = [stored_message(row) for row in rows]
    ops = [op for op in map(outcome, held) if op is not None]
    if not ops:
        return []
    settled = [(m.queue, m.entry.id) for m in held]
    await node.fence(conn, wakes(ops))
    await conn.execute(
        "UPDATE broker_messages SET owner = $2 WHERE id = ANY($1::bigint[])",
        [id for _, id in settled],
        node.id,
    )
    recorded = None if record is None else record(ops)
    await apply(conn, ops if recorded is None else [*ops, recorded], node.id)
    return settled


async def touch_elsewhere(
    pool: Any, id: int, deadline: float, allowed: Callable[[str], bool] | None
) -> bool:
    """Record a new lease deadline of a message another node holds, and tell that node."""
    async with pool.acquire() as conn, conn.transaction():
        queue = await conn.fetchval(
            "SELECT queue FROM broker_messages WHERE id = $1 AND status = 1 FOR UPDATE", id
        )
        if queue is None or (allowed is not None and not allowed(queue)):
            return False
        await conn.execute(
            "UPDATE broker_messages SET lease_deadline = $2 WHERE id = $1", id, deadline
        )
        await notify(conn, [encode_change("t", queue, deadline, id)])
    return True


async def shared_secret(pool: Any, key: str, generate: Callable[[], str]) -> str:
    """The value of a secret every node shares (the JWT key), made by the first to ask."""
    await pool.execute(
        "INSERT INTO broker_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        key,
        generate(),
    )
    return str(await pool.fetchval("SELECT value FROM broker_meta WHERE key = $1", key))
