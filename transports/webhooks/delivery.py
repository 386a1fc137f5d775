"""`WebhookRunner`: one webhook as a push consumer of its queue, posting each delivery over HTTP.

The queue's actor hands it at most ``concurrency`` messages at once (its
prefetch), so the credit of the consumer is the bound on requests in
flight. Each delivery is one task: resolve the host and check every
address against the allowed hosts, POST the signed JSON to the checked
address (so DNS can't change between check and connect), read at most
``webhook_max_response_bytes`` of the answer, then settle: 2xx acks, 410
disables the webhook, anything else (a status, a timeout, a refused
connection, a refused address) nacks with requeue under the queue's retry
policy, a ``Retry-After`` on 429/503 becoming the nack's ``delay_ms``.

httpx rather than aiohttp: it is already a dependency (the client and the
tests use it), it keeps HTTP/1.1 connections alive, its timeouts are per
request, and it never follows a redirect unless asked. Each of a webhook's
``concurrency`` slots ("lanes") has a client of its own holding one
keep-alive connection: httpcore's pool checks every idle connection on each
request (``has_expired``: a ``poll`` and socket lookups per connection):
with one pool of 16 connections that was about half of httpx's time per
request (pyinstrument, 2,000 deliveries at concurrency 16).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
import time
from collections import deque
from contextlib import suppress
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import certifi
import httpx
import msgspec
from loguru import logger

from broker_core.messages import from_timestamp
from broker_core.retry import MAX_DELAY_MS
from broker_core.webhooks import (
    Attempt,
    WebhookRecord,
    address_allowed,
    host_allowed,
    secret_key,
    sign,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from broker_core.broker import Broker
    from broker_core.messages import Entry

__all__ = ["Payload", "WebhookRunner", "WebhookStats"]

RECENT = 20
"""Attempts each webhook remembers for the dashboard."""
NO_POLICY_DELAY_MS = 1000
"""The wait after a failure on a queue without a retry policy (no tight loop on a dead host)."""


class Payload(msgspec.Struct, kw_only=True):
    """The JSON body a webhook receives (``content`` is the message's JSON as published)."""

    message_id: int
    queue: str
    content: msgspec.Raw
    headers: dict[str, str] | None
    attempt: int
    redelivered: bool
    created_at: object


_encode = msgspec.json.Encoder().encode


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context for every lane (building one reads the CA bundle: ~20 ms)."""
    return ssl.create_default_context(cafile=certifi.where())


class WebhookStats:
    """What one webhook did on this node: counts, latency and its recent attempts."""

    __slots__ = ("deliveries", "failures", "last_error", "latency_count", "latency_s", "recent")

    def __init__(self) -> None:
        self.deliveries = 0
        self.failures = 0
        self.latency_s = 0.0
        self.latency_count = 0
        self.last_error: str | None = None
        self.recent: deque[Attempt] = deque(maxlen=RECENT)


class Refused(Exception):
    """A delivery the broker would not make (its address is not allowed)."""


def retry_after_ms(value: str | None, now: float) -> int | None:
    """A ``Retry-After`` (seconds or an HTTP date) in milliseconds, capped; ``None`` if absent."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return max(1, min(MAX_DELAY_MS, int(seconds * 1000)))


class WebhookRunner:
    """One webhook running as a consumer of its queue on this node.

    Args:
        record: the webhook.
        broker: the broker whose queue it consumes.
        allowed: the allowed host patterns.
        max_response_bytes: how much of an answer is read.
        stats: this webhook's counters (kept across pause and resume).
        on_gone: called with the runner when the endpoint answered 410.
        on_queue_deleted: called with the runner when its queue is deleted.
    """

    def __init__(
        self,
        record: WebhookRecord,
        broker: Broker,
        allowed: tuple[str, ...],
        max_response_bytes: int,
        stats: WebhookStats,
        on_gone: Callable[[WebhookRunner, str], object],
        on_queue_deleted: Callable[[WebhookRunner], object],
    ) -> None:
        self.record = record
        self.stats = stats
        self.consumer_id: int | None = None
        self._key = secret_key(record.secret)
        self._broker = broker
        self._lanes: list[httpx.AsyncClient] = []
        self._all_lanes: list[httpx.AsyncClient] = []
        self._allowed = allowed
        self._max_response = max_response_bytes
        self._on_gone = on_gone
        self._on_queue_deleted = on_queue_deleted
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        parts = urlsplit(record.url)
        self._parts = parts
        self._host = (parts.hostname or "").lower()
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        # An address in the URL needs no resolving: checked once here.
        self._literal: str | None = None
        # Checked at creation, and again here: an operator may have narrowed the list since.
        self._host_allowed = host_allowed(self._host, allowed)
        with suppress(ValueError):
            ipaddress.ip_address(self._host)
            if address_allowed(self._host, self._host, allowed):
                self._literal = self._host
        self._acks: list[int] = []
        self._ackers: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        """Requests under way now."""
        return len(self._tasks)

    async def start(self) -> None:
        """Subscribe to the queue (`QueueNotFound` if it is gone)."""
        record = self.record
        self.consumer_id = await self._broker.subscribe(
            record.queue,
            record.concurrency,
            self,
            on_close=lambda: self._on_queue_deleted(self),
            label=f"webhook {record.id} {record.url}",
        )

    async def stop(self) -> None:
        """Cancel the requests under way and give back what it holds (redelivered, not failed)."""
        self._stopping = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError, Exception):
                await task
        # Acks already decided are sent before the consumer goes (else redelivered).
        await asyncio.sleep(0)
        for task in list(self._ackers):
            with suppress(Exception):
                await task
        if self.consumer_id is not None:
            await self._broker.unsubscribe(self.record.queue, self.consumer_id)
            self.consumer_id = None
        for client in self._all_lanes:
            with suppress(Exception):
                await client.aclose()

    def __call__(self, queue: str, entries: list[Entry]) -> None:
        """Take deliveries from the actor (in its turn: only start tasks)."""
        for entry in entries:
            task = asyncio.get_running_loop().create_task(self._deliver(entry))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def body(self, entry: Entry) -> bytes:
        """The JSON the endpoint receives for ``entry``."""
        assert entry.content is not None, "a delivered entry has its body"
        return _encode(
            Payload(
                message_id=entry.id,
                queue=self.record.queue,
                content=msgspec.Raw(entry.content),
                headers=entry.headers,
                attempt=entry.attempt,
                redelivered=entry.redelivered,
                created_at=from_timestamp(entry.created_at),
            )
        )

    async def _address(self) -> str:
        """One checked address of the host (every address it resolves to must be allowed)."""
        if not self._host_allowed:
            raise Refused(f"{self._host} is not in BROKER_WEBHOOK_ALLOWED_HOSTS")
        if self._literal is not None:
            return self._literal
        infos = await asyncio.get_running_loop().getaddrinfo(
            self._host, self._port, type=socket.SOCK_STREAM
        )
        addresses = [str(info[4][0]) for info in infos]
        if not addresses:
            raise Refused(f"{self._host} resolves to no address")
        for address in addresses:
            if not address_allowed(address, self._host, self._allowed):
                raise Refused(f"{self._host} resolves to {address}, which is not allowed")
        return addresses[0]

    async def _post(self, entry: Entry) -> tuple[int, dict[str, str], bytes]:
        address = await self._address()
        body = self.body(entry)
        msg_id = f"msg_{entry.id}"
        timestamp = int(time.time())
        headers = dict(self.record.headers or {})
        headers.update(
            {
                "content-type": "application/json",
                "host": self._parts.netloc.rsplit("@", 1)[-1],
                "webhook-id": msg_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign(self._key, msg_id, timestamp, body),
            }
        )
        netloc = f"[{address}]" if ":" in address else address
        url = urlunsplit(
            (
                self._parts.scheme,
                f"{netloc}:{self._port}",
                self._parts.path or "/",
                self._parts.query,
                "",
            )
        )
        extensions = {"sni_hostname": self._host} if self._parts.scheme == "https" else {}
        timeout = self.record.timeout_ms / 1000
        client = self._lanes.pop() if self._lanes else self._new_lane()
        try:
            request = client.build_request(
                "POST", url, content=body, headers=headers, timeout=timeout, extensions=extensions
            )
            async with asyncio.timeout(timeout):
                response = await client.send(request, stream=True, follow_redirects=False)
                try:
                    kept = bytearray()
                    async for chunk in response.aiter_raw():
                        kept += chunk[: self._max_response - len(kept)]
                        if len(kept) >= self._max_response:
                            break
                finally:
                    await response.aclose()
        finally:
            self._lanes.append(client)
        return response.status_code, dict(response.headers), bytes(kept)

    def _new_lane(self) -> httpx.AsyncClient:
        client = httpx.AsyncClient(
            verify=_tls_context(),
            follow_redirects=False,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            trust_env=False,
        )
        self._all_lanes.append(client)
        return client

    async def _deliver(self, entry: Entry) -> None:
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        delay_ms: int | None = None
        result: bytes | None = None
        try:
            status, headers, result = await self._post(entry)
        except Refused as exc:
            error = f"refused: {exc}"
        except (TimeoutError, httpx.TimeoutException):
            error = f"timed out after {self.record.timeout_ms} ms"
        except (httpx.HTTPError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except Exception as exc:
            # Whatever it was, the message is nacked now rather than held until its lease ends.
            logger.opt(exception=exc).warning("webhook request failed", webhook=self.record.id)
            error = f"{type(exc).__name__}: {exc}"
        else:
            if not 200 <= status < 300:
                error = f"HTTP {status}"
                if status in (429, 503):
                    delay_ms = retry_after_ms(headers.get("retry-after"), time.time())
        latency = time.perf_counter() - started
        if self._stopping:
            return
        stats = self.stats
        stats.latency_s += latency
        stats.latency_count += 1
        outcome = "acked" if error is None else "nacked"
        if status == 410:
            outcome = "disabled"
        if error is None:
            stats.deliveries += 1
        else:
            stats.failures += 1
            stats.last_error = error
        stats.recent.append(
            Attempt(
                at=time.time(),
                message_id=entry.id,
                attempt=entry.attempt,
                status=status,
                outcome=outcome,
                latency_ms=round(latency * 1000, 3),
                error=error,
            )
        )
        if status == 410:
            # Not the message's failure: it goes back when the consumer is removed.
            self._on_gone(self, "the endpoint answered 410 Gone")
            return
        await self._settle(entry, error, delay_ms, result)

    def _flush_acks(self, consumer_id: int) -> None:
        ids, self._acks = self._acks, []
        task = asyncio.get_running_loop().create_task(self._ack(consumer_id, ids))
        self._ackers.add(task)
        task.add_done_callback(self._ackers.discard)

    async def _ack(self, consumer_id: int, ids: list[int]) -> None:
        try:
            await self._broker.consumer_ack(self.record.queue, consumer_id, ids)
        except Exception as exc:
            logger.opt(exception=exc).warning("webhook could not ack", webhook=self.record.id)

    def _json_result(self, body: bytes | None) -> bytes | None:
        """A 2xx body that is JSON within the result limit, else ``None`` (a plain ack)."""
        if not body or len(body) > self._broker.results.max_bytes:
            return None
        try:
            msgspec.json.decode(body)
        except msgspec.DecodeError:
            return None
        return body

    async def _settle(
        self, entry: Entry, error: str | None, delay_ms: int | None, result: bytes | None
    ) -> None:
        consumer_id = self.consumer_id
        if consumer_id is None:
            return
        queue = self.record.queue
        result = self._json_result(result) if error is None else None
        if result is not None:
            # A JSON answer becomes the message's result (its waiters wake once it committed).
            ack = functools.partial(self._broker.consumer_ack, queue, consumer_id, [entry.id])
            try:
                await self._broker.results.settle_with([entry.id], result, ack)
            except Exception as exc:
                logger.opt(exception=exc).warning("webhook could not ack", webhook=self.record.id)
            return
        if error is None:
            # Acks that finish in one turn of the loop go to the actor together.
            if not self._acks:
                asyncio.get_running_loop().call_soon(self._flush_acks, consumer_id)
            self._acks.append(entry.id)
            return
        try:
            if delay_ms is None and self._broker.actor(queue).state.options.retry is None:
                delay_ms = NO_POLICY_DELAY_MS
            await self._broker.consumer_nack(
                queue, consumer_id, [entry.id], True, f"webhook: {error}", delay_ms
            )
        except Exception as exc:
            # The queue went away or storage failed: the lease runs out and the
            # message comes back; nothing to add here but a note.
            logger.opt(exception=exc).warning(
                "webhook could not settle", webhook=self.record.id, message=entry.id
            )
