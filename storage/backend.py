"""`StorageBackend`: what every storage backend offers beyond the core's `Storage` protocol.

The core needs `broker_core.journal.Storage`; the transports also keep users
and refresh tokens in the same database (its `accounts`, an
`storage.accounts.AccountStore`) and report the backend's name, size and
commit counters. `SQLiteStorage` and `PostgresStorage` both satisfy this
protocol, and `storage.storage_from_settings` returns it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from broker_core.journal import Storage

if TYPE_CHECKING:
    from broker_core.schedules import ScheduleStore
    from broker_core.topic_registry import TopicStore

    from .accounts import AccountStore
    from .commit_health import BatchStats
    from .webhooks import WebhookStore

__all__ = ["StorageBackend"]


class StorageBackend(Storage, Protocol):
    """The whole storage of a broker: the journal, replay and reads, and its account store."""

    @property
    def name(self) -> str:
        """The backend's name for ``/stats`` (``"sqlite"``, ``"postgres"``)."""
        ...

    @property
    def accounts(self) -> AccountStore:
        """Users and refresh tokens, in the same database."""
        ...

    @property
    def topics(self) -> TopicStore:
        """Topics and their bindings, in the same database."""
        ...

    @property
    def schedules(self) -> ScheduleStore:
        """Recurring schedules, in the same database."""
        ...

    @property
    def webhooks(self) -> WebhookStore:
        """Webhooks, in the same database (`storage.webhooks`)."""
        ...

    @property
    def batch_stats(self) -> BatchStats:
        """Commit counters (batches, ops, seconds, failures)."""
        ...

    def size_bytes(self) -> int:
        """Bytes the broker's data takes in storage (cheap: may be a few seconds old)."""
        ...
