"""`PeerService`: what the coordinator needs of a peer broker already running on 127.0.0.1."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, ClassVar

from ..harness import listener_pid, reachable

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["PeerService"]


class PeerService:
    """A peer service: reachability, version, endpoint; subclasses manage queues or streams.

    Subclasses set the class attributes and implement `server_version`, `create`
    and `delete`; the service itself is started and stopped by the machine.
    """

    key: ClassVar[str]
    name: ClassVar[str]
    module: ClassVar[str]
    port: ClassVar[int]
    url: ClassVar[str]
    version_prefix: ClassVar[str]
    refusal: ClassVar[str] = "cannot connect"
    """How `unavailable` words a listener that doesn't answer as the peer should."""

    @staticmethod
    async def server_version() -> str:
        """The server's version, from a fresh connection."""
        raise NotImplementedError

    @classmethod
    def unavailable(cls) -> str | None:
        """Why it can't be measured here, or None."""
        if not reachable(cls.port):
            return f"nothing listens on 127.0.0.1:{cls.port}"
        try:
            asyncio.run(cls.server_version())
        except Exception as exc:
            return f"{cls.refusal}: {exc!r}"
        return None

    def __enter__(self) -> PeerService:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def server_pid(self) -> int | None:
        """The pid of the process listening on the peer's port (for its CPU time)."""
        return listener_pid(self.port)

    def version(self) -> str:
        """The peer's name and version, for the report."""
        return f"{self.version_prefix} {asyncio.run(self.server_version())}"

    def endpoint(self) -> dict[str, Any]:
        """What a worker process needs to connect."""
        return {"url": self.url}

    def create(self, queues: Sequence[str], prefetch: int, consumers: int) -> None:
        """Make ``queues`` empty and ready for a run."""
        raise NotImplementedError

    def delete(self, queues: Sequence[str]) -> None:
        """Remove ``queues`` after a run."""
        raise NotImplementedError
