"""A tiny HTTP/1.1 endpoint on 127.0.0.1 for webhook tests (asyncio streams, keep-alive).

It records every request, verifies its Standard Webhooks signature against
the key it is given, and counts requests in flight to catch a webhook that
exceeds its concurrency. ``answer`` decides each response.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


@dataclass
class Received:
    """One request the receiver got."""

    headers: dict[str, str]
    body: bytes
    signed: bool
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    """What to answer: status, headers, body, and a wait before answering."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay_s: float = 0.0


def signature_valid(key: bytes, headers: dict[str, str], body: bytes) -> bool:
    """Check ``webhook-signature`` as a Standard Webhooks receiver would (any v1 entry)."""
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for part in headers["webhook-signature"].split(" "):
        version, _, value = part.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return True
    return False


class Receiver:
    """The endpoint: ``await start()``, then ``url``; ``answer`` maps a request to a `Reply`."""

    def __init__(self, answer: Callable[[Received], Awaitable[Reply] | Reply] | None = None):
        self.answer = answer
        self.key: bytes | None = None
        self.received: list[Received] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def use_secret(self, secret: str) -> None:
        self.key = base64.b64decode(secret.removeprefix("whsec_"))

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        loop = asyncio.get_running_loop()
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                signed = self.key is not None and signature_valid(self.key, headers, body)
                request = Received(headers, body, signed, loop.time())
                self.received.append(request)
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                try:
                    reply = Reply()
                    if self.answer is not None:
                        made = self.answer(request)
                        reply = made if isinstance(made, Reply) else await made
                    if reply.delay_s:
                        await asyncio.sleep(reply.delay_s)
                finally:
                    self.in_flight -= 1
                extra = "".join(f"{k}: {v}\r\n" for k, v in reply.headers.items())
                writer.write(
                    f"HTTP/1.1 {reply.status} X\r\ncontent-length: {len(reply.body)}\r\n"
                    f"{extra}\r\n".encode()
                    + reply.body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
