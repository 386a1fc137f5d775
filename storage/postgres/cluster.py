"""`ClusterNode`: one broker node's membership among the nodes that share a PostgreSQL database.

Each node has a row in ``broker_nodes``: a fresh ``id`` at every start (the
fencing token its leases carry in ``broker_messages.owner``) and a ``slot``
(part of the message ids it makes, `broker_core.ids`). Three loops run per node:

- the **heartbeat** refreshes the row; a row found dead means other nodes
  gave this node's leases away: the node takes a new identity (`rejoin`)
  and its writes are refused meanwhile;
- the **reaper** (one node at a time, under a transaction-scoped advisory
  lock, and only on a node whose own heartbeats have gone through for a
  timeout's time, so that a database outage doesn't make every node look
  dead) marks nodes whose heartbeat is older than the timeout dead, puts
  their leases back to pending marked redelivered, expires pending messages
  past their TTL (dead-lettered or deleted, as the queue says) and forgets
  dead nodes after a while (their slot is then free again);
- the **listener** holds a ``LISTEN`` session and turns notifications into
  `broker_core.journal.Change`s; when it (re)connects it tells
  ``reconnected``, and every ``poll_s`` ``resync`` (a fallback for a
  delayed message whose time no one told).

A node tells itself its own commits' changes (`tell_own`; its listener skips
them, `own`), and while it is alone on the database (`alone`, counted at
join and by heartbeats, and told by a joining node's ``n``) it sends no
message wakes at all: no ``NOTIFY`` per batch for nobody.

Time in ``broker_nodes`` is the database's clock, so nodes' clocks may differ.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import asyncpg
from loguru import logger

from broker_core.ids import SLOTS
from broker_core.journal import Change

from ..rows import decode_options

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = ["CHANNEL", "ClusterNode", "NodeEvicted", "encode_change", "message_wake"]

CHANNEL = "wsbroker"
"""The ``NOTIFY`` channel of the broker's changes."""
_SEPARATOR = "\x1f"
_SENDER = "\x1e"
"""Ends the sending node's id before a payload a node also told itself (`tell_own`)."""
_KINDS = {"m": "messages", "q": "queue", "u": "user", "d": "dedup", "t": "touch", "r": "result"}
_JOINED = "n"
"""The payload a node sends once its listener runs: the others stop thinking they are alone."""
_REAPER_LOCK = int.from_bytes(b"wsbreapr", "big")
_FORGET_DEAD_S = 300.0
"""A dead node's row (and slot) is kept this long: a node that was only slow learns it was
evicted before its slot can be handed to another node."""
_REAP_BATCH = 1000
_DB_NOW = "extract(epoch from clock_timestamp())"


class NodeEvicted(ConnectionError):
    """This node was presumed dead by the others: its leases were given away."""


def encode_change(kind: str, name: str, at: float = 0.0, id: int = 0, key: str = "") -> str:
    """The ``NOTIFY`` payload of a change (``kind`` is one of `_KINDS`).

    ``key`` (a client's ``dedup_id``, any text) goes last: it may hold the separator.
    """
    if key or id:
        return _SEPARATOR.join((kind, name, repr(at), str(id), key))
    return f"{kind}{_SEPARATOR}{name}{_SEPARATOR}{at!r}" if at else f"{kind}{_SEPARATOR}{name}"


def message_wake(payload: str) -> bool:
    """Whether ``payload`` (of `encode_change`) tells of ready or delayed messages."""
    return payload.startswith("m" + _SEPARATOR)


def _decode_change(payload: str) -> Change | None:
    kind, name, at, id, key = [*payload.split(_SEPARATOR, 4), "", "", "", ""][:5]
    full = _KINDS.get(kind)
    if full is None:
        return None
    try:
        return Change(full, name, float(at) if at else 0.0, int(id) if id else 0, key)
    except ValueError:
        return None


class ClusterNode:
    """This node's row in ``broker_nodes`` and the loops that keep the cluster healthy.

    Args:
        pool: the storage's connection pool.
        connect: opens a connection of its own (the listener's session).
        name: the node's name.
        timeout_s: a node silent this long is presumed dead.
        poll_s: how often to resync in case a notification was missed.
    """

    def __init__(
        self,
        pool: Any,
        connect: Callable[[], Any],
        *,
        name: str,
        timeout_s: float,
        poll_s: float,
    ) -> None:
        self._pool = pool
        self._connect = connect
        self.name = name
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.id = 0
        self.slot = 0
        self.evicted = False
        self._healthy_since: float | None = None
        self._callbacks: list[Callable[[Change], None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._listen_conn: Any = None
        self._listening = asyncio.Event()
        self.peers = 0
        """Other live nodes, as last counted (heartbeats; a joining node tells at once)."""
        self._joined_at = 0.0

    # -- membership ---------------------------------------------------------------

    async def join(self) -> None:
        """Take a node row and a free slot, then start the loops."""
        await self._register()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._heartbeats(), name="cluster-heartbeat"),
            loop.create_task(self._reaps(), name="cluster-reaper"),
            loop.create_task(self._listen(), name="cluster-listener"),
        ]
        # Changes made from now on reach this node: nothing is missed at start.
        await asyncio.wait_for(self._listening.wait(), 30)
        # Now the others may stop skipping their wakes (`alone`): tell them.
        await notify(self._pool, [f"{_JOINED}{_SEPARATOR}{self.id}"])

    @property
    def alone(self) -> bool:
        """Whether no other live node shares the database: message wakes need no ``NOTIFY``.

        A node that joins counts the others as it registers and tells them
        once it listens (``n``); the others count it from then on, and every
        heartbeat counts again. A wake skipped in between (a joining node
        that went idle before the others heard of it) is found by its
        ``poll_s`` resync at worst.
        """
        return self.peers == 0

    async def _register(self) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            # One registration at a time: two nodes must not pick the same slot.
            await conn.execute("LOCK TABLE broker_nodes IN SHARE ROW EXCLUSIVE MODE")
            await conn.execute(
                f"DELETE FROM broker_nodes WHERE dead AND heartbeat_at < {_DB_NOW} - $1",
                _FORGET_DEAD_S,
            )
            taken = {row[0] for row in await conn.fetch("SELECT slot FROM broker_nodes")}
            free = next((slot for slot in range(SLOTS) if slot not in taken), None)
            if free is None:
                raise ConnectionError(f"{SLOTS} broker nodes already share this database")
            self.id = await conn.fetchval(
                "INSERT INTO broker_nodes (slot, name, started_at, heartbeat_at) "
                f"VALUES ($1, $2, {_DB_NOW}, {_DB_NOW}) RETURNING id",
                free,
                self.name,
            )
            self.slot = free
            self.peers = await conn.fetchval(
                "SELECT count(*) FROM broker_nodes WHERE NOT dead AND id <> $1", self.id
            )
        self.evicted = False
        self._healthy_since = time.monotonic()
        logger.info("joined the cluster", node=self.name, node_id=self.id, slot=self.slot)

    async def leave(self) -> None:
        """Stop the loops and remove this node's row (its leases were given back before)."""
        await self.stop()
        with suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            await self._pool.execute(
                "UPDATE broker_messages SET status = 0, redelivered = true, lease_deadline = 0, "
                "owner = NULL WHERE status = 1 AND owner = $1",
                self.id,
            )
            await self._pool.execute("DELETE FROM broker_nodes WHERE id = $1", self.id)

    async def stop(self) -> None:
        """Stop the loops and the listener's session (the row stays, as after a crash)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError):
                await task
        conn, self._listen_conn = self._listen_conn, None
        if conn is not None:
            conn.terminate()

    async def fence(self, conn: Any, payloads: Iterable[str] = ()) -> None:
        """In a write's transaction: hold this node's row, or raise `NodeEvicted`.

        The row lock keeps the reaper from declaring this node dead until the
        transaction ends, so nothing this node writes lands after its leases
        were given away. ``payloads`` are notified at commit, in the same
        round trip.
        """
        alive = await conn.fetchval(
            f"SELECT NOT dead, (SELECT count(pg_notify('{CHANNEL}', p)) "
            "FROM unnest($2::text[]) AS p) FROM broker_nodes WHERE id = $1 FOR SHARE",
            self.id,
            list(dict.fromkeys(payloads)),
        )
        if not alive:
            raise self.refused()

    def refused(self) -> NodeEvicted:
        """A write found this node's row dead: mark it evicted; the error to raise."""
        self._evicted()
        return NodeEvicted(f"node {self.name} was presumed dead by the others; rejoining")

    def _evicted(self) -> None:
        if not self.evicted:
            self.evicted = True
            logger.error(
                "this node was presumed dead by the cluster; its leases went to other nodes",
                node=self.name,
            )

    async def _heartbeats(self) -> None:
        interval = max(0.1, self.timeout_s / 4)
        while True:
            await asyncio.sleep(interval)
            try:
                if self.evicted:
                    await self._register()
                    self._tell(Change("rejoined", self.name))
                    continue
                peers = await self._pool.fetchval(
                    f"UPDATE broker_nodes SET heartbeat_at = {_DB_NOW} WHERE id = $1 AND NOT dead "
                    "RETURNING (SELECT count(*) FROM broker_nodes WHERE NOT dead AND id <> $1)",
                    self.id,
                )
                if peers is None:
                    self._evicted()
                    continue
                if peers or time.monotonic() - self._joined_at > 2 * interval:
                    # (A count taken just before a node joined must not undo its ``n``.)
                    self.peers = peers
                if self._healthy_since is None:
                    self._healthy_since = time.monotonic()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                self._healthy_since = None
                logger.warning("heartbeat failed", node=self.name, reason=str(exc))

    # -- the reaper -------------------------------------------------------------------

    async def _reaps(self) -> None:
        interval = max(0.1, min(1.0, self.timeout_s / 4))
        while True:
            await asyncio.sleep(interval)
            healthy = self._healthy_since
            if healthy is None or time.monotonic() - healthy < self.timeout_s:
                # After an outage every node's heartbeat looks stale: judge the others
                # only once they, like this node, have had a timeout's time to beat again.
                continue
            try:
                await self.reap(time.time())
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                logger.warning("reaping failed", node=self.name, reason=str(exc))

    async def reap(self, now: float) -> None:
        """One pass of the reaper (skipped when another node is reaping)."""
        async with self._pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _REAPER_LOCK):
                return
            dead = await conn.fetch(
                f"UPDATE broker_nodes SET dead = true WHERE NOT dead "
                f"AND heartbeat_at < {_DB_NOW} - $1 RETURNING id, name",
                self.timeout_s,
            )
            for _, name in dead:
                logger.warning("node presumed dead; its leases go back to pending", node=name)
            woken = await conn.fetch(
                "UPDATE broker_messages SET status = 0, redelivered = true, lease_deadline = 0, "
                "owner = NULL WHERE status = 1 AND owner IN "
                "(SELECT id FROM broker_nodes WHERE dead) RETURNING queue"
            )
            queues = {row[0] for row in woken}
            queues |= await self._expire(conn, now)
            await conn.execute(
                f"DELETE FROM broker_nodes WHERE dead AND heartbeat_at < {_DB_NOW} - $1",
                _FORGET_DEAD_S,
            )
            await notify(conn, (encode_change("m", queue) for queue in queues))

    async def _expire(self, conn: Any, now: float) -> set[str]:
        """Dead-letter or delete pending messages past their TTL; return the queues woken."""
        rows = await conn.fetch(
            "SELECT id, queue FROM broker_messages WHERE status = 0 AND expires_at > 0 "
            "AND expires_at <= $1 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED",
            now,
            _REAP_BATCH,
        )
        if not rows:
            return set()
        by_queue: dict[str, list[int]] = {}
        for id, queue in rows:
            by_queue.setdefault(queue, []).append(id)
        options = {
            name: decode_options(stored)
            for name, stored in await conn.fetch("SELECT name, options FROM broker_queues")
        }
        woken: set[str] = set()
        for queue, ids in by_queue.items():
            source = options.get(queue)
            target = source.dead_letter_queue if source is not None else None
            if target is None or target == queue or target not in options:
                # Ended (status 4), not deleted: kept body-less with its history, which
                # gets the ``expired`` line (`broker_core.history_codec`) here.
                await conn.execute(
                    "UPDATE broker_messages SET status = 4, settled_at = $2, content = ''::bytea, "
                    "last_error = 'expired', history = coalesce(history, '') || "
                    "round(($2 - created_at) * 1000)::bigint::text || E'e\\n' "
                    "WHERE id = ANY($1::bigint[])",
                    ids,
                    now,
                )
                continue
            await conn.execute(
                "UPDATE broker_messages SET queue = $2, attempt = 0, redelivered = false, "
                "expires_at = 0, dead_lettered_from = $3, dedup_id = NULL, "
                "last_error = coalesce(last_error, 'expired') WHERE id = ANY($1::bigint[])",
                ids,
                target,
                queue,
            )
            woken.add(target)
        return woken

    # -- the listener -------------------------------------------------------------------

    def watch(self, callback: Callable[[Change], None]) -> None:
        """Call ``callback`` with every change told to this node."""
        self._callbacks.append(callback)

    def _tell(self, change: Change) -> None:
        for callback in list(self._callbacks):
            try:
                callback(change)
            except Exception as exc:  # pragma: no cover - callbacks are ours
                logger.opt(exception=exc).error("change callback failed", change=change.kind)

    def own(self, payloads: Iterable[str]) -> list[str]:
        """``payloads`` marked as this node's: its listener skips them (see `tell_own`)."""
        return [f"{self.id}{_SENDER}{payload}" for payload in dict.fromkeys(payloads)]

    def tell_own(self, payloads: Iterable[str]) -> None:
        """Tell this node the changes its own commit made, at once.

        Waiting for its own ``NOTIFY`` to come back through the listener's
        session costs a server round trip and two wake-ups per batch on the
        path from a publish to its delivery; the listener skips payloads
        marked by `own` with this node's id.
        """
        for payload in payloads:
            change = _decode_change(payload.partition(_SENDER)[2] or payload)
            if change is not None:
                self._tell(change)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if payload.startswith(_JOINED + _SEPARATOR):
            if payload != f"{_JOINED}{_SEPARATOR}{self.id}":
                self.peers = max(self.peers, 1)
                self._joined_at = time.monotonic()
            return
        if payload[:1].isdigit():
            # Payloads start with a kind letter; a digit starts a sender's id (`own`).
            sender, _, payload = payload.partition(_SENDER)
            if sender == str(self.id):
                return
        change = _decode_change(payload)
        if change is not None:
            self._tell(change)

    async def _listen(self) -> None:
        delay = 0.1
        while True:
            lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            try:
                conn = await self._connect()
                conn.add_termination_listener(_resolver(lost))
                await conn.add_listener(CHANNEL, self._on_notify)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                logger.warning("cluster listener can't connect", reason=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._listen_conn = conn
            delay = 0.1
            self._listening.set()
            # Whatever was told while this session was away: look again.
            self._tell(Change("reconnected", ""))
            while not lost.done():
                with suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(lost), self.poll_s)
                if not lost.done():
                    self._tell(Change("resync", ""))
            logger.warning("cluster listener lost its session; reconnecting")
            self._listen_conn = None


def _resolver(future: asyncio.Future[None]) -> Callable[[object], None]:
    """A termination listener that resolves ``future`` (the session is gone)."""

    def resolve(_conn: object) -> None:
        if not future.done():
            future.set_result(None)

    return resolve


async def notify(conn: Any, payloads: Iterable[str]) -> None:
    """Tell every node ``payloads`` when ``conn``'s transaction commits (once each)."""
    unique = list(dict.fromkeys(payloads))
    if unique:
        await conn.execute(f"SELECT pg_notify('{CHANNEL}', p) FROM unnest($1::text[]) AS p", unique)
