"""Fixtures and helpers of the cluster tests: several broker processes on one PostgreSQL.

Every node is ``python -m transports serve`` (a `ServerProcess`) with its own
data dir and port, the test's database as ``BROKER_STORAGE_URL``, a
``BROKER_NODE_NAME`` and a short ``BROKER_NODE_TIMEOUT_S``. Each test gets an
empty database of its own (dropped with ``FORCE`` at the end, so connections a
killed node left behind don't matter) and the `cluster` fixture, which starts
the nodes it names and stops them all at the end. When a test fails, the tail
of every node's stderr is added to its report.

Every wait has a deadline in `MS` units (scaled by
``BROKER_TEST_TIMEOUT_FACTOR``): `PROPAGATION_S` for what one node learns
from another (queues, users), `NODE_DEAD_S` for the leases of a killed node.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import MS, ServerProcess, login
from tests.storage.pg_database import temporary_database

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
    from pathlib import Path

T = TypeVar("T")

NODE_TIMEOUT_S = 2
"""``BROKER_NODE_TIMEOUT_S`` of every node: silent this long, a node is presumed dead."""
PROPAGATION_S = 2000 * MS
"""How long a node may take to learn what another did (a queue, a user, a revocation)."""
COUNTS_S = 5000 * MS
"""How long cluster-wide counts may take to settle after the last ack."""
NODE_DEAD_S = 15_000 * MS
"""How long the messages a killed node held may take to reach another node's consumer."""
RECV_S = 5000 * MS
"""How long one expected WebSocket frame may take."""

COUNT_FIELDS = ("pending", "processing", "processed", "failed")


# -- nodes ----------------------------------------------------------------------------


class Node(ServerProcess):
    """One cluster node: a `ServerProcess` on the shared database, with a name.

    Its stderr is drained by a thread into `stderr_tail` once it runs: an
    undrained pipe would block the node when it logs much (a dying peer makes
    the others warn), and the tail explains a failure.
    """

    def __init__(self, name: str, data_dir: Path, storage_url: str, **env: str) -> None:
        cluster_env = {
            "BROKER_NODE_NAME": name,
            "BROKER_NODE_TIMEOUT_S": str(NODE_TIMEOUT_S),
            "BROKER_STORAGE_URL": storage_url,
        }
        super().__init__(data_dir, None, **(cluster_env | env))
        self.name = name
        self.stderr_tail: deque[str] = deque(maxlen=200)

    def __repr__(self) -> str:
        return f"<Node {self.name} :{self.port}>"

    async def start(self) -> None:
        await super().start()
        threading.Thread(target=self._drain, name=f"node-{self.name}-stderr", daemon=True).start()

    def _drain(self) -> None:
        stream = self.process.stderr if self.process is not None else None
        if stream is None:
            return
        # The pipe is closed by kill()/terminate() once the process is gone.
        with contextlib.suppress(ValueError, OSError):
            for line in stream:
                self.stderr_tail.append(line.decode(errors="replace").rstrip())


class Cluster:
    """The nodes of one test on one database, and admin HTTP clients of each.

    Args:
        root: where the nodes' data dirs go (``<root>/<name>``).
        storage_url: the shared database.
    """

    def __init__(self, root: Path, storage_url: str) -> None:
        self.root = root
        self.storage_url = storage_url
        self.nodes: list[Node] = []
        self._admins: dict[str, httpx.AsyncClient] = {}

    async def start(self, *names: str, **env: str) -> list[Node]:
        """Start a node per name (each on its own data dir and port); return them in order."""
        nodes = [Node(name, self.root / name, self.storage_url, **env) for name in names]
        self.nodes.extend(nodes)
        first, *others = nodes
        # The first node alone creates the schema, the admin and the JWT secret:
        # what is tested here is serving together, not racing to set up a database.
        await first.start()
        await asyncio.gather(*(node.start() for node in others))
        return nodes

    async def admin(self, node: Node) -> httpx.AsyncClient:
        """An HTTP client of ``node`` with an admin token that node issued (closed at the end)."""
        http = self._admins.get(node.name)
        if http is None:
            token = (await login(node.url))["access_token"]
            http = self._admins[node.name] = client_of(node, token)
        return http

    async def admin_token(self, node: Node) -> str:
        """The access token of `admin`'s client of ``node``."""
        header = (await self.admin(node)).headers["Authorization"]
        return str(header.removeprefix("Bearer "))

    async def stop(self) -> None:
        for http in self._admins.values():
            await http.aclose()
        await asyncio.gather(*(asyncio.to_thread(node.terminate) for node in self.nodes))


def client_of(node: ServerProcess, token: str | None = None) -> httpx.AsyncClient:
    """An HTTP client of ``node``, with ``token`` as its bearer when given."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=node.url, headers=headers, timeout=10)


@pytest.fixture
def storage_url() -> Iterator[str]:
    """An empty database of this test's own on the local server (dropped after), or a skip."""
    with temporary_database() as url:
        yield url


@pytest.fixture
async def cluster(tmp_path: Path, storage_url: str) -> AsyncIterator[Cluster]:
    """Start nodes with ``await cluster.start("a", "b")``; all are stopped at the end."""
    nodes = Cluster(tmp_path, storage_url)
    try:
        yield nodes
    finally:
        await nodes.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Add the tail of each node's stderr to a failed test's report."""
    report = yield
    nodes = getattr(item, "funcargs", {}).get("cluster")
    if report.failed and nodes is not None:
        for node in getattr(nodes, "nodes", ()):
            text = "\n".join(node.stderr_tail) or "(nothing)"
            report.sections.append((f"node {node.name} stderr ({call.when})", text))
    return report


# -- waiting --------------------------------------------------------------------------


async def eventually(
    probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], *, within: float, what: str
) -> T:
    """Call ``probe`` until ``done`` accepts its value; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if done(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {within:.1f} s; last seen: {value!r}")
        await asyncio.sleep(20 * MS)


# -- REST -----------------------------------------------------------------------------


async def create_queue(http: httpx.AsyncClient, name: str, **options: Any) -> dict[str, Any]:
    """Create a queue; its info."""
    response = await http.post("/queues", json={"name": name, **options})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def known_to(http: httpx.AsyncClient, name: str) -> dict[str, Any]:
    """Wait until the node behind ``http`` knows queue ``name``; its info there."""

    async def get() -> httpx.Response:
        return await http.get(f"/queues/{name}")

    response = await eventually(
        get,
        lambda r: r.status_code == 200,
        within=PROPAGATION_S,
        what=f"queue {name!r} known to {http.base_url}",
    )
    return dict(response.json())


async def shared_queue(
    creator: httpx.AsyncClient, other: httpx.AsyncClient, name: str, **options: Any
) -> dict[str, Any]:
    """Create a queue through one node and wait until another knows it; its info there."""
    await create_queue(creator, name, **options)
    return await known_to(other, name)


async def publish(http: httpx.AsyncClient, queue: str, content: Any, **options: Any) -> int:
    """Publish one message over REST; its id once committed."""
    response = await http.post(f"/queues/{queue}/messages", json={"content": content, **options})
    assert response.status_code == 201, response.text
    return int(response.json()["message_id"])


async def publish_batch(http: httpx.AsyncClient, queue: str, contents: list[Any]) -> list[int]:
    """Publish a batch over REST; the ids in order once committed."""
    response = await http.post(
        f"/queues/{queue}/messages/batch", json={"messages": [{"content": c} for c in contents]}
    )
    assert response.status_code == 201, response.text
    return [int(m["message_id"]) for m in response.json()["messages"]]


async def pull(http: httpx.AsyncClient, queue: str, **params: Any) -> list[dict[str, Any]]:
    """Lease messages over REST (``GET .../messages/consume``); ``[]`` on 204."""
    response = await http.get(f"/queues/{queue}/messages/consume", params=params)
    if response.status_code == 204:
        return []
    assert response.status_code == 200, response.text
    return list(response.json()["messages"])


async def counts(http: httpx.AsyncClient, queue: str) -> dict[str, int]:
    """The queue's message counts as the node behind ``http`` answers them."""
    response = await http.get(f"/queues/{queue}")
    assert response.status_code == 200, response.text
    info = response.json()
    return {field: int(info[field]) for field in COUNT_FIELDS}


async def settle_counts(
    https: list[httpx.AsyncClient], queue: str, *, within: float = COUNTS_S, **expected: int
) -> None:
    """Wait until every node shows ``expected`` counts of ``queue`` (cluster-wide figures)."""
    for http in https:

        async def probe(http: httpx.AsyncClient = http) -> dict[str, int]:
            return await counts(http, queue)

        await eventually(
            probe,
            lambda seen: all(seen[key] == value for key, value in expected.items()),
            within=within,
            what=f"counts of {queue!r} on {http.base_url} to be {expected}",
        )


# -- WebSocket ------------------------------------------------------------------------


async def open_ws(node: ServerProcess, token: str) -> ClientConnection:
    """A raw WebSocket to the node's ``/ws``, authenticated by header."""
    return await connect(
        f"{node.ws_url}/ws",
        additional_headers={"Authorization": f"Bearer {token}"},
        compression=None,
        open_timeout=RECV_S,
        close_timeout=1000 * MS,
    )


async def send(ws: ClientConnection, **frame: Any) -> None:
    await ws.send(json.dumps(frame))


async def recv(ws: ClientConnection, within: float = RECV_S) -> dict[str, Any]:
    """The next frame, decoded; fails after ``within`` seconds."""
    try:
        data = await asyncio.wait_for(ws.recv(), within)
    except TimeoutError:
        raise AssertionError(f"no frame within {within:.1f} s") from None
    frame: dict[str, Any] = json.loads(data)
    return frame


async def subscribe(ws: ClientConnection, queue: str, prefetch: int = 10) -> int:
    """Subscribe; the subscription id (a backlog's deliveries come only after ``subscribed``)."""
    await send(ws, op="subscribe", queue=queue, prefetch=prefetch, ref=f"sub-{queue}")
    reply = await recv(ws)
    assert reply["op"] == "subscribed", reply
    return int(reply["subscription"])


async def deliveries(
    ws: ClientConnection, count: int, within: float = RECV_S
) -> list[dict[str, Any]]:
    """The next ``count`` frames, all of which must be ``deliver``, within ``within`` seconds."""
    deadline = time.monotonic() + within
    frames: list[dict[str, Any]] = []
    while len(frames) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{len(frames)} of {count} deliveries within {within:.1f} s")
        frame = await recv(ws, remaining)
        assert frame["op"] == "deliver", frame
        frames.append(frame)
    return frames


async def quiet(ws: ClientConnection, within: float) -> None:
    """Assert that no frame comes in the next ``within`` seconds."""
    with contextlib.suppress(TimeoutError):
        frame = await asyncio.wait_for(ws.recv(), within)
        raise AssertionError(f"unexpected frame: {frame!r}")
