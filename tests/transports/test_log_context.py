"""Which request id a log record carries: its own request's, never another's."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import TYPE_CHECKING, Any

import pytest
from loguru import logger

from tests.conftest import MS, make_settings
from tests.transports.ws.test_endpoint import make_queue, open_ws, recv, subscribe
from transports.logging import configure_logging
from transports.observability.middleware import RequestMetricsMiddleware
from transports.observability.telemetry import RequestCounters
from transports.ws.session import Session

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    import httpx
    from loguru import Record

    from tests.conftest import BrokerServer

LIBRARY_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "litestar", "websockets")


@pytest.fixture
def records(tmp_path: Path) -> Iterator[list[Record]]:
    """Records logged with the broker's logging configuration, undone after the test."""
    loggers = [logging.getLogger(), *map(logging.getLogger, LIBRARY_LOGGERS)]
    saved = [(lg, list(lg.handlers), lg.propagate, lg.level) for lg in loggers]
    configure_logging(make_settings(tmp_path / "logging", log_level="DEBUG"))
    caught: list[Record] = []
    logger.add(lambda message: caught.append(message.record), level="DEBUG")
    yield caught
    logger.remove()
    logger.configure(patcher=lambda record: None)
    logger.add(sys.stderr)  # loguru's default sink
    for lg, handlers, propagate, level in saved:
        lg.handlers[:] = handlers
        lg.propagate = propagate
        lg.setLevel(level)


async def test_ws_error_log_carries_its_own_request_id(
    server: BrokerServer,
    client: httpx.AsyncClient,
    admin_token: str,
    records: list[Record],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A /ws session failing in a queue's task logs the WebSocket's id, not the queue creator's."""
    await make_queue(client)  # the queue's task starts within this request
    created = await client.post("/queues", json={"name": "other"})
    ws = await open_ws(server, admin_token, headers={"X-Request-ID": "ws-own-id"})
    await subscribe(ws)

    def broken(*args: Any) -> None:
        raise RuntimeError("injected delivery fault")

    monkeypatch.setattr(Session, "deliver", broken)
    published = await client.post("/queues/jobs/messages", json={"content": "x"})
    assert published.status_code == 201, published.text
    with pytest.raises(Exception, match="internal error"):
        while True:
            await recv(ws)
    await ws.close()
    [failed] = [r for r in records if r["message"] == "websocket session failed"]
    assert failed["extra"]["request_id"] == "ws-own-id"
    assert created.headers["x-request-id"] != "ws-own-id"


async def test_task_started_by_a_request_does_not_log_its_id_after_it(
    records: list[Record],
) -> None:
    """A task a request spawned, logging once the request is over, carries no request id."""
    release = asyncio.Event()
    spawned: list[asyncio.Task[None]] = []

    async def background() -> None:
        await release.wait()
        logger.info("late record")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        spawned.append(asyncio.get_running_loop().create_task(background()))
        logger.info("own record")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def send(message: Any) -> None:
        return None

    middleware = RequestMetricsMiddleware(app, RequestCounters())
    scope = {"type": "http", "method": "GET", "headers": [(b"x-request-id", b"req-1")]}
    await middleware(scope, None, send)
    release.set()
    await asyncio.wait_for(spawned[0], 5000 * MS)
    by_message = {
        r["message"]: r["extra"].get("request_id") for r in records if r["name"] == __name__
    }
    assert by_message == {"own record": "req-1", "late record": None}
