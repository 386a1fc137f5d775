"""`Webhooks`: the webhooks of a running broker: created, listed, paused, deleted, and run.

Each active webhook whose queue exists runs as a `WebhookRunner` on this
node. The records live in storage (`storage.webhooks`), so they survive a
restart; on PostgreSQL every node runs every webhook and re-reads the table
each `SYNC_INTERVAL_S` to follow the others' changes, while the claims of the
shared queue keep two nodes from posting one message at once.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from contextlib import suppress
from typing import TYPE_CHECKING

import msgspec
from loguru import logger

from broker_core.errors import QueueNotFound
from broker_core.webhooks import (
    CreateWebhookRequest,
    WebhookRecord,
    WebhookState,
    WebhookView,
    check_headers,
    generate_secret,
    host_allowed,
    secret_key,
    target_host,
)

from ..errors import ApiError
from .delivery import WebhookRunner, WebhookStats

if TYPE_CHECKING:
    from collections.abc import Coroutine
    from typing import Any

    from broker_core.broker import Broker
    from broker_core.settings import Settings
    from storage.webhooks import WebhookStore

__all__ = ["SYNC_INTERVAL_S", "Webhooks", "invalid", "webhook_not_found"]

SYNC_INTERVAL_S = 1.0
"""How often the records are re-read and the runners reconciled with them."""

_decode = msgspec.json.Decoder(WebhookRecord).decode
_encode = msgspec.json.Encoder().encode


def webhook_not_found(id: str) -> ApiError:
    """No webhook with this id on this queue (404)."""
    return ApiError(404, "webhook_not_found", f"webhook {id!r} not found")


def invalid(field: str, reason: str) -> ApiError:
    """A refused field of a webhook request: 422 naming it, as msgspec's errors do."""
    return ApiError(422, "invalid", f"{reason} - at `$.{field}`")


class Webhooks:
    """Every webhook of the broker and the runners of the active ones on this node."""

    def __init__(self, broker: Broker, store: WebhookStore, settings: Settings, shared: bool):
        self._broker = broker
        self._store = store
        self._settings = settings
        self._shared = shared
        self.records: dict[str, WebhookRecord] = {}
        self.runners: dict[str, WebhookRunner] = {}
        self.stats: dict[str, WebhookStats] = {}
        self._syncer: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Load the webhooks and run the active ones (after the broker started)."""
        await self.sync()
        self._syncer = asyncio.get_running_loop().create_task(self._sync_forever())

    async def close(self) -> None:
        """Stop every runner (their messages go back to their queues)."""
        if self._syncer is not None:
            self._syncer.cancel()
            with suppress(asyncio.CancelledError):
                await self._syncer
        async with self._lock:
            for runner in list(self.runners.values()):
                with suppress(Exception):
                    await runner.stop()
            self.runners.clear()

    async def _sync_forever(self) -> None:
        while True:
            await asyncio.sleep(SYNC_INTERVAL_S)
            try:
                await self.sync(reload=self._shared)
            except Exception as exc:
                logger.opt(exception=exc).warning("webhooks: sync failed")

    async def sync(self, reload: bool = True) -> None:
        """Re-read the records (when ``reload``) and start or stop runners to match them."""
        async with self._lock:
            if reload:
                documents = await self._store.list_webhooks()
                self.records = {r.id: r for r in map(_decode, documents)}
            for id, runner in list(self.runners.items()):
                record = self.records.get(id)
                if (
                    record is None
                    or record.state is not WebhookState.ACTIVE
                    or record != runner.record
                ):
                    del self.runners[id]
                    await runner.stop()
            for record in self.records.values():
                if record.state is WebhookState.ACTIVE and record.id not in self.runners:
                    if self._broker.find_actor(record.queue) is None:
                        continue
                    await self._run(record)

    async def _run(self, record: WebhookRecord) -> None:
        runner = WebhookRunner(
            record,
            self._broker,
            self._settings.webhook_allowed_hosts,
            self._settings.webhook_max_response_bytes,
            self.stats.setdefault(record.id, WebhookStats()),
            on_gone=self._gone,
            on_queue_deleted=self._queue_deleted,
        )
        try:
            await runner.start()
        except QueueNotFound:
            return
        self.runners[record.id] = runner

    def _gone(self, runner: WebhookRunner, reason: str) -> None:
        self._background(self._disable(runner.record.id, reason))

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        # Called in an actor's turn or a delivery's callback: do the awaiting later.
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _disable(self, id: str, reason: str) -> None:
        async with self._lock:
            record = self.records.get(id)
            if record is None or record.disabled is not None:
                return
            logger.warning("webhook disabled", webhook=id, queue=record.queue, reason=reason)
            await self._put(msgspec.structs.replace(record, disabled=reason))
            runner = self.runners.pop(id, None)
            if runner is not None:
                await runner.stop()

    def _queue_deleted(self, runner: WebhookRunner) -> None:
        self._background(self._forget(runner.record))

    async def _forget(self, record: WebhookRecord) -> None:
        async with self._lock:
            runner = self.runners.pop(record.id, None)
            if runner is not None:
                with suppress(Exception):
                    await runner.stop()  # its requests and connections; the queue is gone
            self.records.pop(record.id, None)
            self.stats.pop(record.id, None)
            await self._store.delete_webhook(record.id)

    async def _put(self, record: WebhookRecord) -> None:
        await self._store.put_webhook(record.id, record.queue, _encode(record))
        self.records[record.id] = record

    # -- what the transports call ------------------------------------------------------

    def check(self, data: CreateWebhookRequest) -> None:
        """Refuse a request whose URL, secret or headers can't be used (422 naming the field)."""
        try:
            host = target_host(data.url)
        except ValueError as exc:
            raise invalid("url", str(exc)) from None
        if not host_allowed(host, self._settings.webhook_allowed_hosts):
            raise invalid("url", f"host {host!r} is not in BROKER_WEBHOOK_ALLOWED_HOSTS")
        if data.secret is not None:
            try:
                secret_key(data.secret)
            except ValueError as exc:
                raise invalid("secret", str(exc)) from None
        try:
            check_headers(data.headers)
        except ValueError as exc:
            raise invalid("headers", str(exc)) from None

    async def create(self, queue: str, data: CreateWebhookRequest, user: str) -> WebhookView:
        """Create and start a webhook; the answer is the only one that shows its secret."""
        self.check(data)
        self._broker.actor(queue)  # QueueNotFound
        record = WebhookRecord(
            id="wh_" + secrets.token_hex(8),
            queue=queue,
            url=data.url,
            secret=data.secret or generate_secret(),
            concurrency=data.concurrency,
            timeout_ms=data.timeout_ms,
            headers=data.headers,
            created_at=time.time(),
            created_by=user,
        )
        async with self._lock:
            await self._put(record)
            await self._run(record)
        return msgspec.structs.replace(self.view(record), secret=record.secret)

    def find(self, queue: str, id: str) -> WebhookRecord:
        """The webhook ``id`` of ``queue`` (404)."""
        record = self.records.get(id)
        if record is None or record.queue != queue:
            raise webhook_not_found(id)
        return record

    def list(self, queue: str | None = None) -> list[WebhookView]:
        """The webhooks of ``queue`` (all when ``None``), without secrets."""
        return [
            self.view(record)
            for record in sorted(self.records.values(), key=lambda r: r.created_at)
            if queue is None or record.queue == queue
        ]

    async def set_paused(self, queue: str, id: str, paused: bool) -> WebhookView:
        """Pause a webhook (its messages go back), or resume it (a 410 is forgotten)."""
        async with self._lock:
            record = msgspec.structs.replace(self.find(queue, id), paused=paused, disabled=None)
            await self._put(record)
        await self.sync(reload=False)
        return self.view(record)

    async def delete(self, queue: str, id: str) -> None:
        """Delete a webhook (its messages go back to the queue)."""
        async with self._lock:
            self.find(queue, id)
            await self._store.delete_webhook(id)
            self.records.pop(id, None)
            self.stats.pop(id, None)
            runner = self.runners.pop(id, None)
            if runner is not None:
                await runner.stop()

    def view(self, record: WebhookRecord) -> WebhookView:
        """What users see of ``record`` (never the secret)."""
        stats = self.stats.get(record.id) or WebhookStats()
        runner = self.runners.get(record.id)
        return WebhookView(
            id=record.id,
            queue=record.queue,
            url=record.url,
            concurrency=record.concurrency,
            timeout_ms=record.timeout_ms,
            headers=record.headers,
            state=record.state,
            created_at=record.created_at,
            in_flight=runner.in_flight if runner is not None else 0,
            deliveries=stats.deliveries,
            failures=stats.failures,
            last_error=record.disabled or stats.last_error,
            recent=list(stats.recent),
        )
