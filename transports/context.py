"""`BrokerContext`: the running broker's services, shared by every transport.

The composition root (`transports.app`) builds one per app and opens it in
the lifespan; REST handlers, the WebSocket endpoint and GraphQL resolvers
receive it by dependency injection (``ctx``) or from ``app.state.ctx``.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress
from typing import TYPE_CHECKING, Any, cast

from loguru import logger

from broker_core.auth import TokenService
from broker_core.broker import Broker
from broker_core.scheduler import Scheduler
from broker_core.topic_registry import Topics
from storage import storage_from_settings

from . import allocator
from .accounts import Accounts
from .ratelimit import LoginLimiter, TokenBucketLimiter
from .secrets import ensure_data_dir, generate_secret, load_or_create_secret
from .webhooks import Webhooks

if TYPE_CHECKING:
    from litestar import Request
    from litestar.connection import ASGIConnection

    from broker_core.journal import SharedStorage
    from broker_core.settings import Settings

__all__ = ["BrokerContext", "Limits", "ctx_of"]

_PRUNE_INTERVAL_S = 5.0


class Limits:
    """The rate limiters, one per route class (in memory, per process)."""

    def __init__(self, settings: Settings) -> None:
        def bucket(rate: float) -> TokenBucketLimiter:
            return TokenBucketLimiter(rate, max(rate, 1.0))

        self.logins = LoginLimiter(settings)
        self.publish = bucket(settings.rate_publish_per_s)
        self.consume = bucket(settings.rate_consume_per_s)
        self.admin = bucket(settings.rate_admin_per_s)
        self.default = bucket(settings.rate_default_per_s)


class BrokerContext:
    """Settings, storage, broker, accounts and limits of one running broker.

    Use ``async with`` (the app's lifespan does): it opens storage, replays
    the queues, bootstraps the first admin and starts background pruning;
    leaving it stops intake, flushes and closes.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started_at = time.time()
        self._data_dir = ensure_data_dir(settings.data_dir)
        self.storage = storage_from_settings(settings)
        self.broker = Broker(
            self.storage,
            max_queues=settings.max_queues,
            dedup_window_s=settings.dedup_window_s,
            body_cache_bytes=settings.body_cache_bytes,
            default_lease_s=settings.default_lease_s,
        )
        self.scheduler = Scheduler(self.broker, self.storage.schedules, shared=self.storage.shared)
        self.broker.results.recording = settings.history
        self.broker.results.max_bytes = settings.max_result_bytes
        # Made at start: on shared storage the signing key is in the database.
        self.tokens: TokenService
        self.accounts: Accounts
        self.limits = Limits(settings)
        self.topics = Topics(self.broker, self.storage.topics, shared=self.storage.shared)
        self.generated_admin_password: str | None = None
        from .observability.tracing import tracing_from_settings

        self.tracing = tracing_from_settings(settings)
        """Spans of traced messages, or ``None`` when off (``settings.otel``)."""
        self._pruner: asyncio.Task[None] | None = None
        self.webhooks = Webhooks(
            self.broker, self.storage.webhooks, settings, shared=self.storage.shared
        )

    async def __aenter__(self) -> BrokerContext:
        await self.broker.start()
        await self.topics.load()
        await self.scheduler.start()
        settings = self.settings
        self.tokens = TokenService(
            await self._jwt_secret(), settings.access_token_ttl_s, settings.refresh_token_ttl_s
        )
        changes = cast("SharedStorage", self.storage) if self.storage.shared else None
        self.accounts = Accounts(self.storage.accounts, self.tokens, changes)
        await self.accounts.load()
        generated = await self.accounts.bootstrap_admin(
            settings.admin_username, settings.admin_password
        )
        if generated is not None:
            self.generated_admin_password = generated
            # Printed once, never logged: the log files outlive the terminal.
            print(
                f"\n  First start: created admin user {settings.admin_username!r} with password\n"
                f"  {generated}\n  Keep it now; it is stored only as a hash.\n",
                flush=True,
            )
        self._pruner = asyncio.get_running_loop().create_task(self._prune_forever())
        await self.webhooks.start()
        # The replay's rows are freed now; their pages go back (they'd stay resident).
        allocator.trim()
        return self

    async def _jwt_secret(self) -> str:
        """The configured key, else the one all nodes share (in their database), else the file's."""
        if self.settings.jwt_secret is not None:
            return self.settings.jwt_secret
        if self.storage.shared:
            shared = cast("SharedStorage", self.storage)
            return await shared.shared_secret("jwt_secret", generate_secret)
        return load_or_create_secret(self._data_dir / "jwt.secret")

    async def __aexit__(self, *exc: object) -> None:
        await self.webhooks.close()
        if self._pruner is not None:
            self._pruner.cancel()
            with suppress(asyncio.CancelledError):
                await self._pruner
        await self.topics.close()
        await self.scheduler.close()
        await self.broker.close()
        if self.tracing is not None:
            self.tracing.shutdown()

    async def _prune_forever(self) -> None:
        while True:
            await asyncio.sleep(_PRUNE_INTERVAL_S)
            try:
                await self.broker.prune(time.time(), self.settings.failed_retention_s)
            except Exception as exc:
                logger.opt(exception=exc).warning("pruning retained messages failed")


def ctx_of(request: Request[Any, Any, Any] | ASGIConnection[Any, Any, Any, Any]) -> BrokerContext:
    """The broker context of the app serving ``request`` (route handlers' way to it)."""
    ctx: BrokerContext = request.app.state.ctx
    return ctx
