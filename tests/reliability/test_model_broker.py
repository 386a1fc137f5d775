"""Model-based test of the running broker: random REST and WebSocket operations against a model.

A Hypothesis `RuleBasedStateMachine` publishes (REST, REST batch, WebSocket),
leases over REST, subscribes over WebSocket, acks and nacks over both (a REST
ack may settle a WebSocket delivery), unsubscribes, disconnects, purges and
restarts the server (`BrokerServer.restart`, a clean stop) while a reference
model made of lists and dicts predicts every answer: which message each
lease or push delivers, in which order, with which ``attempt`` and
``redelivered``, and the queue's counts after every step. Any divergence
fails the test.

The machine runs in a worker thread with blocking clients (httpx and
``websockets.sync``) while the server runs on the test's event loop. A
WebSocket ``ack`` has no answer, so after one the machine sends an ``auth``
frame and waits for its ``authenticated``: frames of one connection are
handled in order, so the ack has been applied by then.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections import deque
from typing import TYPE_CHECKING, Any, ClassVar

import httpx
from hypothesis import HealthCheck, Phase, settings, strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.conftest import MS

if TYPE_CHECKING:
    from tests.conftest import BrokerServer

LEASE_S = 600
"""REST leases outlive the test: an expired lease would be a move the model doesn't make."""
MAX_RESTARTS = 2
"""Restarts per example (each costs a server start)."""

contents = st.one_of(
    st.integers(-(2**53), 2**53),
    st.text(max_size=12),
    st.dictionaries(st.text(max_size=4), st.integers(0, 9), max_size=2),
)
_names = itertools.count()


class Env:
    """What the machine needs of the test: the server, its loop and an admin token."""

    def __init__(self, server: BrokerServer, loop: asyncio.AbstractEventLoop, token: str) -> None:
        self.server = server
        self.loop = loop
        self.token = token

    def restart(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.restart(), self.loop).result(30)


class WsPeer:
    """A blocking WebSocket client that sets pushed deliveries aside while it waits for answers."""

    def __init__(self, url: str, token: str) -> None:
        self.token = token
        self._stack = contextlib.ExitStack()
        self.ws: ClientConnection = self._stack.enter_context(
            connect(
                f"{url}/ws",
                additional_headers={"Authorization": f"Bearer {token}"},
                open_timeout=5000 * MS,
                compression=None,
            )
        )
        self.pushed: deque[dict[str, Any]] = deque()
        self._refs = itertools.count(1)

    def send(self, **frame: Any) -> None:
        self.ws.send(json.dumps(frame))

    def ref(self) -> str:
        return f"r{next(self._refs)}"

    def answer(self, ref: str) -> dict[str, Any]:
        """Read until the frame answering ``ref``; deliveries read meanwhile are kept."""
        while True:
            frame = self._read()
            if frame.get("ref") == ref:
                return frame
            assert frame["op"] == "deliver", f"unexpected frame {frame}"
            self.pushed.append(frame)

    def deliveries(self, count: int) -> list[dict[str, Any]]:
        """The next ``count`` pushed deliveries."""
        while len(self.pushed) < count:
            frame = self._read()
            assert frame["op"] == "deliver", f"unexpected frame {frame}"
            self.pushed.append(frame)
        return [self.pushed.popleft() for _ in range(count)]

    def barrier(self) -> None:
        """Return once every frame sent before has been handled by the server."""
        ref = self.ref()
        self.send(op="auth", token=self.token, ref=ref)
        assert self.answer(ref)["op"] == "authenticated"

    def _read(self) -> dict[str, Any]:
        frame: dict[str, Any] = json.loads(self.ws.recv(timeout=2000 * MS))
        return frame

    def close(self) -> None:
        self._stack.close()


class BrokerMachine(RuleBasedStateMachine):
    """One queue of the running broker, driven at random and compared with a model."""

    ENV: ClassVar[Env]
    """Set by a subclass made per test (Hypothesis makes machines from a class)."""

    def __init__(self) -> None:
        super().__init__()
        self.env = self.ENV
        self.queue = f"model-{next(_names)}"
        self.http = self._http()
        self.ws: WsPeer | None = None
        # The model.
        self.pending: list[int] = []
        self.attempts: dict[int, int] = {}
        self.contents: dict[int, Any] = {}
        self.rest_held: set[int] = set()
        self.ws_held: dict[int, int] = {}  # tag -> message id
        self.prefetch: int | None = None  # the subscription's prefetch, if subscribed
        self.subscription: int | None = None
        self.processed = 0
        self.failed = 0
        self.restarts = 0
        self.last_id = 0

    def _http(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.env.server.url,
            headers={"Authorization": f"Bearer {self.env.token}"},
            timeout=10,
        )

    # -- model helpers ----------------------------------------------------------------

    def _new(self, message_id: int, content: Any) -> None:
        assert message_id > self.last_id, "message ids only grow"
        self.last_id = message_id
        self.attempts[message_id] = 0
        self.contents[message_id] = content
        self.pending.append(message_id)

    def _lease(self, message_id: int, view: dict[str, Any]) -> None:
        """Check one delivered message against the model's next one."""
        self.attempts[message_id] += 1
        attempt = self.attempts[message_id]
        assert view["message_id"] == message_id, (view, self.pending)
        assert view["content"] == self.contents[message_id]
        assert (view["attempt"], view["redelivered"]) == (attempt, attempt > 1), view

    def _dispatch(self) -> None:
        """Push what the subscription has credit for, as the broker must, and check it."""
        if self.ws is None or self.prefetch is None:
            return
        expected: list[int] = []
        while self.pending and len(self.ws_held) + len(expected) < self.prefetch:
            expected.append(self.pending.pop(0))
        for message_id, frame in zip(expected, self.ws.deliveries(len(expected)), strict=True):
            assert frame["subscription"] == self.subscription
            self._lease(message_id, frame)
            self.ws_held[frame["tag"]] = message_id

    def _give_back_ws(self) -> None:
        """The subscription ended: what it held goes back to the head, lowest id first."""
        self.pending[:0] = sorted(self.ws_held.values())
        self.ws_held.clear()
        self.prefetch = self.subscription = None

    def _peer(self) -> WsPeer:
        if self.ws is None:
            self.ws = WsPeer(self.env.server.ws_url, self.env.token)
        return self.ws

    # -- setup and teardown -----------------------------------------------------------

    @initialize()
    def create_queue(self) -> None:
        response = self.http.post("/queues", json={"name": self.queue, "lease": LEASE_S})
        assert response.status_code == 201, response.text

    def teardown(self) -> None:
        if self.ws is not None:
            self.ws.close()
        self.http.delete(f"/queues/{self.queue}")
        self.http.close()

    # -- publish ------------------------------------------------------------------------

    @rule(content=contents)
    def publish_rest(self, content: Any) -> None:
        response = self.http.post(f"/queues/{self.queue}/messages", json={"content": content})
        assert response.status_code == 201, response.text
        self._new(response.json()["message_id"], content)
        self._dispatch()

    @rule(batch=st.lists(contents, min_size=1, max_size=4))
    def publish_rest_batch(self, batch: list[Any]) -> None:
        response = self.http.post(
            f"/queues/{self.queue}/messages/batch",
            json={"messages": [{"content": c} for c in batch]},
        )
        assert response.status_code == 201, response.text
        for message, content in zip(response.json()["messages"], batch, strict=True):
            self._new(message["message_id"], content)
        self._dispatch()

    @rule(content=contents)
    def publish_ws(self, content: Any) -> None:
        peer = self._peer()
        ref = peer.ref()
        peer.send(op="publish", queue=self.queue, content=content, ref=ref)
        answer = peer.answer(ref)
        assert answer["op"] == "confirm", answer
        self._new(answer["message_id"], content)
        self._dispatch()

    # -- REST consumer ------------------------------------------------------------------

    @rule(count=st.integers(1, 4))
    def consume_rest(self, count: int) -> None:
        response = self.http.get(
            f"/queues/{self.queue}/messages/consume",
            params={"max": count, "wait": 0, "lease": LEASE_S},
        )
        expected = self.pending[:count]
        if not expected:
            assert response.status_code == 204, response.text
            return
        assert response.status_code == 200, response.text
        views = response.json()["messages"]
        assert [v["message_id"] for v in views] == expected
        del self.pending[: len(expected)]
        for message_id, view in zip(expected, views, strict=True):
            self._lease(message_id, view)
            self.rest_held.add(message_id)

    @precondition(lambda self: self.rest_held)
    @rule(data=st.data())
    def ack_rest(self, data: st.DataObject) -> None:
        message_id = data.draw(st.sampled_from(sorted(self.rest_held)))
        response = self.http.post(f"/messages/{message_id}/ack")
        assert response.status_code == 200, response.text
        self.rest_held.discard(message_id)
        self.processed += 1

    @precondition(lambda self: self.rest_held)
    @rule(data=st.data(), requeue=st.booleans())
    def nack_rest(self, data: st.DataObject, requeue: bool) -> None:
        message_id = data.draw(st.sampled_from(sorted(self.rest_held)))
        response = self.http.post(
            f"/messages/{message_id}/nack", params={"requeue": str(requeue).lower()}
        )
        assert response.status_code == 200, response.text
        self.rest_held.discard(message_id)
        if requeue:
            self.pending.insert(0, message_id)
            self._dispatch()
        else:
            self.failed += 1

    @precondition(lambda self: self.ws_held)
    @rule(data=st.data())
    def ack_rest_of_a_push_delivery(self, data: st.DataObject) -> None:
        tag = data.draw(st.sampled_from(sorted(self.ws_held)))
        response = self.http.post(f"/messages/{self.ws_held.pop(tag)}/ack")
        assert response.status_code == 200, response.text
        self.processed += 1
        self._dispatch()  # the subscription got its credit back

    @rule()
    def ack_rest_of_nothing_held(self) -> None:
        settled = set(self.rest_held) | set(self.ws_held.values())
        unknown = next(i for i in itertools.count(self.last_id + 1) if i not in settled)
        response = self.http.post(f"/messages/{unknown}/ack")
        assert response.status_code == 409, response.text

    # -- WebSocket consumer ---------------------------------------------------------------

    @precondition(lambda self: self.prefetch is None)
    @rule(prefetch=st.integers(1, 4))
    def subscribe_ws(self, prefetch: int) -> None:
        peer = self._peer()
        ref = peer.ref()
        peer.send(op="subscribe", queue=self.queue, prefetch=prefetch, ref=ref)
        answer = peer.answer(ref)
        assert answer["op"] == "subscribed", answer
        self.prefetch, self.subscription = prefetch, answer["subscription"]
        self._dispatch()

    @precondition(lambda self: self.ws_held)
    @rule(data=st.data())
    def ack_ws(self, data: st.DataObject) -> None:
        assert self.ws is not None
        tags = data.draw(st.lists(st.sampled_from(sorted(self.ws_held)), min_size=1, unique=True))
        self.ws.send(op="ack", tags=tags)
        self.ws.barrier()
        for tag in tags:
            del self.ws_held[tag]
            self.processed += 1
        self._dispatch()

    @precondition(lambda self: self.ws_held)
    @rule(data=st.data(), requeue=st.booleans())
    def nack_ws(self, data: st.DataObject, requeue: bool) -> None:
        assert self.ws is not None
        tag = data.draw(st.sampled_from(sorted(self.ws_held)))
        self.ws.send(op="nack", tags=[tag], requeue=requeue)
        self.ws.barrier()
        message_id = self.ws_held.pop(tag)
        if requeue:
            self.pending.insert(0, message_id)
        else:
            self.failed += 1
        self._dispatch()

    @precondition(lambda self: self.ws is not None)
    @rule()
    def ack_ws_unknown_tag(self) -> None:
        assert self.ws is not None
        ref = self.ws.ref()
        self.ws.send(op="ack", tags=[10**9], ref=ref)
        answer = self.ws.answer(ref)
        assert (answer["op"], answer["code"], answer["tags"]) == ("error", "unknown_tag", [10**9])

    @precondition(lambda self: self.subscription is not None)
    @rule()
    def unsubscribe_ws(self) -> None:
        assert self.ws is not None
        ref = self.ws.ref()
        self.ws.send(op="unsubscribe", subscription=self.subscription, ref=ref)
        answer = self.ws.answer(ref)
        assert (answer["op"], answer["requeued"]) == ("unsubscribed", len(self.ws_held)), answer
        self._give_back_ws()

    @precondition(lambda self: self.ws is not None)
    @rule()
    def disconnect_ws(self) -> None:
        assert self.ws is not None
        self.ws.close()
        self.ws = None
        self._give_back_ws()
        # The server requeues on its side of the close: wait until it has.
        deadline = time.monotonic() + 5000 * MS
        while self.http.get(f"/queues/{self.queue}").json()["consumers"]:
            assert time.monotonic() < deadline, "the server kept the consumer"
            time.sleep(5 * MS)

    # -- queue-wide -----------------------------------------------------------------------

    @rule()
    def purge(self) -> None:
        response = self.http.post(f"/queues/{self.queue}/purge")
        assert response.status_code == 200, response.text
        assert response.json()["purged"] == len(self.pending)
        self.pending.clear()

    @precondition(lambda self: self.restarts < MAX_RESTARTS)
    @rule()
    def restart(self) -> None:
        self.http.close()
        if self.ws is not None:
            self.ws.close()
            self.ws = None
        self.env.restart()
        self.restarts += 1
        self.http = self._http()
        # A clean stop: what was leased comes back pending, and the order is by id again.
        self.pending = sorted([*self.pending, *self.rest_held, *self.ws_held.values()])
        self.rest_held.clear()
        self.ws_held.clear()
        self.prefetch = self.subscription = None

    # -- after every step ------------------------------------------------------------------

    @invariant()
    def counts_agree(self) -> None:
        info = self.http.get(f"/queues/{self.queue}").json()
        expected = {
            "pending": len(self.pending),
            "processing": len(self.rest_held) + len(self.ws_held),
            "processed": self.processed,
            "failed": self.failed,
            "consumers": 0 if self.subscription is None else 1,
        }
        assert {key: info[key] for key in expected} == expected

    @invariant()
    def nothing_else_was_pushed(self) -> None:
        if self.ws is not None:
            assert not self.ws.pushed, f"unexpected deliveries {list(self.ws.pushed)}"


def _run(env: Env) -> None:
    class Machine(BrokerMachine):
        ENV = env

    try:
        run_state_machine_as_test(
            Machine,
            settings=settings(
                max_examples=40,
                stateful_step_count=50,
                deadline=None,
                database=None,
                # Shrinking replays steps against a live server: too slow to
                # bound. A failure prints its whole sequence of steps instead.
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            ),
        )
    except ConnectionClosed as exc:  # pragma: no cover - a failure's own report
        raise AssertionError(f"the server closed the WebSocket: {exc}") from exc


async def test_broker_matches_its_model(server: BrokerServer, admin_token: str) -> None:
    """Random REST and WebSocket operations and restarts never make broker and model diverge."""
    env = Env(server, asyncio.get_running_loop(), admin_token)
    await asyncio.to_thread(_run, env)
