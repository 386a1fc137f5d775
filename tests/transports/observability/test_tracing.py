"""Trace context through the broker: a traceparent reaches consumers; spans when otel is on."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from gql import Client, GraphQLRequest
from gql.transport.websockets import WebsocketsTransport

from tests.conftest import MS, BrokerServer, login, make_settings
from tests.transports.ws.test_endpoint import make_queue, open_ws, recv, send, subscribe
from transports.observability.tracing import valid_traceparent

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
MESSAGES = 'subscription { messages(queue: "jobs", prefetch: 5) { messageId headers } }'


async def rest_consumed_headers(client: httpx.AsyncClient) -> dict[str, str]:
    response = await client.get("/queues/jobs/messages/consume", params={"wait": 5})
    assert response.status_code == 200, response.text
    body = response.json()
    message = body["messages"][0] if "messages" in body else body
    headers: dict[str, str] = message["headers"]
    return headers


async def ws_delivered_headers(server: BrokerServer, token: str) -> dict[str, str]:
    async with await open_ws(server, token) as ws:
        await subscribe(ws, prefetch=1)
        frame = await recv(ws)
    assert frame["op"] == "deliver", frame
    headers: dict[str, str] = frame["headers"]
    return headers


async def graphql_delivered_headers(server: BrokerServer, token: str) -> dict[str, str]:
    transport = WebsocketsTransport(
        url=f"{server.ws_url}/graphql", init_payload={"token": token}, connect_timeout=5
    )
    async with Client(transport=transport, execute_timeout=5) as session:
        events = session.subscribe(GraphQLRequest(MESSAGES))
        async with asyncio.timeout(5000 * MS):
            event = await anext(events)
        await events.aclose()
    headers = event["messages"]["headers"]
    return headers if isinstance(headers, dict) else json.loads(headers)


async def publish_with_http_header(client: httpx.AsyncClient, **headers: str) -> None:
    response = await client.post(
        "/queues/jobs/messages",
        json={"content": "job", "headers": {"k": "v"}},
        headers={"traceparent": TRACEPARENT, "tracestate": "vendor=1", **headers},
    )
    assert response.status_code == 201, response.text


# -- propagation ----------------------------------------------------------------------------


async def test_http_traceparent_reaches_a_rest_consumer(client: httpx.AsyncClient) -> None:
    """The traceparent and tracestate HTTP headers of a REST publish are in the pulled message."""
    await make_queue(client)
    await publish_with_http_header(client)
    headers = await rest_consumed_headers(client)
    assert headers == {"k": "v", "traceparent": TRACEPARENT, "tracestate": "vendor=1"}


async def test_http_traceparent_reaches_a_websocket_consumer(
    server: BrokerServer, client: httpx.AsyncClient, admin_token: str
) -> None:
    """A REST publish's traceparent header is in the WebSocket deliver frame's headers."""
    await make_queue(client)
    await publish_with_http_header(client)
    assert (await ws_delivered_headers(server, admin_token))["traceparent"] == TRACEPARENT


async def test_http_traceparent_reaches_a_graphql_consumer(
    server: BrokerServer, client: httpx.AsyncClient, admin_token: str
) -> None:
    """A REST publish's traceparent header is in the GraphQL subscription's message headers."""
    await make_queue(client)
    await publish_with_http_header(client)
    assert (await graphql_delivered_headers(server, admin_token))["traceparent"] == TRACEPARENT


async def test_http_traceparent_applies_to_each_message_of_a_batch(
    client: httpx.AsyncClient,
) -> None:
    """Batch publish: every message gets the request's context unless it carries its own."""
    await make_queue(client)
    own = f"00-{'1' * 32}-{'2' * 16}-01"
    response = await client.post(
        "/queues/jobs/messages/batch",
        json={"messages": [{"content": 1}, {"content": 2, "headers": {"traceparent": own}}]},
        headers={"traceparent": TRACEPARENT},
    )
    assert response.status_code == 201, response.text
    page = (await client.get("/queues/jobs/messages")).json()["messages"]
    assert [m["headers"]["traceparent"] for m in page] == [TRACEPARENT, own]


async def test_a_message_header_traceparent_from_websocket_reaches_every_consumer(
    server: BrokerServer, client: httpx.AsyncClient, admin_token: str
) -> None:
    """A traceparent message header published over /ws is delivered over REST, WS and GraphQL."""
    await make_queue(client)
    async with await open_ws(server, admin_token) as ws:
        for n in range(3):
            await send(
                ws,
                op="publish",
                queue="jobs",
                content=n,
                headers={"traceparent": TRACEPARENT},
                ref=n,
            )
        confirms = [await recv(ws) for _ in range(3)]
    assert [c["op"] for c in confirms] == ["confirm"] * 3, confirms
    assert (await rest_consumed_headers(client))["traceparent"] == TRACEPARENT
    assert (await ws_delivered_headers(server, admin_token))["traceparent"] == TRACEPARENT
    assert (await graphql_delivered_headers(server, admin_token))["traceparent"] == TRACEPARENT


async def test_a_malformed_traceparent_header_is_ignored(client: httpx.AsyncClient) -> None:
    """An invalid traceparent HTTP header is not copied into the message (W3C 4.3)."""
    await make_queue(client)
    response = await client.post(
        "/queues/jobs/messages",
        json={"content": "job"},
        headers={"traceparent": f"00-{'0' * 32}-{PARENT_ID}-01"},
    )
    assert response.status_code == 201, response.text
    assert "traceparent" not in ((await rest_consumed_headers(client)) or {})


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (TRACEPARENT, True),
        (f"ff-{TRACE_ID}-{PARENT_ID}-01", False),
        (f"00-{TRACE_ID.upper()}-{PARENT_ID}-01", False),
        (f"00-{TRACE_ID}-{'0' * 16}-01", False),
        (f"00-{TRACE_ID}-{PARENT_ID}", False),
    ],
)
def test_traceparent_validation(value: str, valid: bool) -> None:
    """Version ff, upper case, zero ids and missing flags are invalid (W3C 3.2)."""
    assert valid_traceparent(value) is valid


# -- spans ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exporter() -> Any:
    """The SDK's in-memory exporter behind the process's tracer provider (set once)."""
    pytest.importorskip(
        "opentelemetry.sdk", reason="spans need the otel extra: pip install 'wsbroker[otel]'"
    )
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return memory


@pytest.fixture
async def traced(tmp_path: Path, exporter: Any) -> AsyncIterator[BrokerServer]:
    """A broker with spans on (``otel``), exporting to the in-memory exporter."""
    exporter.clear()
    server = BrokerServer(make_settings(tmp_path / "data", otel=True))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_publish_deliver_and_ack_spans_continue_the_incoming_trace(
    traced: BrokerServer, exporter: Any
) -> None:
    """REST publish, /ws deliver and ack make spans in the publisher's trace, children of it."""
    token = (await login(traced.url))["access_token"]
    async with httpx.AsyncClient(
        base_url=traced.url, headers={"Authorization": f"Bearer {token}"}
    ) as client:
        await make_queue(client)
        await publish_with_http_header(client)
        async with await open_ws(traced, token) as ws:
            await subscribe(ws, prefetch=1)
            frame = await recv(ws)
            await send(ws, op="ack", tags=[frame["tag"]])
            await asyncio.sleep(100 * MS)
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert {"publish jobs", "deliver jobs", "ack jobs"} <= spans.keys(), spans.keys()
    for span in (spans["publish jobs"], spans["deliver jobs"], spans["ack jobs"]):
        assert format(span.context.trace_id, "032x") == TRACE_ID
        assert span.parent is not None and format(span.parent.span_id, "016x") == PARENT_ID
        assert span.attributes["messaging.destination.name"] == "jobs"
        assert span.attributes["messaging.message.id"] == str(frame["message_id"])
    assert spans["deliver jobs"].attributes["network.protocol.name"] == "websocket"


async def test_graphql_and_rest_paths_make_spans_too(traced: BrokerServer, exporter: Any) -> None:
    """GraphQL publish, REST consume and REST ack make their spans in the message's trace."""
    token = (await login(traced.url))["access_token"]
    async with httpx.AsyncClient(
        base_url=traced.url, headers={"Authorization": f"Bearer {token}"}
    ) as client:
        await make_queue(client)
        mutation = (
            'mutation { publish(queue: "jobs", content: 1, headers: {traceparent: "'
            + TRACEPARENT
            + '"}) { messageId } }'
        )
        published = await client.post("/graphql", json={"query": mutation})
        assert "errors" not in published.json(), published.text
        pulled = await client.get("/queues/jobs/messages/consume")
        body = pulled.json()
        message = body["messages"][0] if "messages" in body else body
        assert (await client.post(f"/messages/{message['message_id']}/ack")).status_code < 300
    spans = exporter.get_finished_spans()
    by_name = {(s.name, s.attributes.get("network.protocol.name")) for s in spans}
    assert ("publish jobs", "graphql") in by_name, by_name
    assert ("deliver jobs", "http") in by_name, by_name
    assert "ack jobs" in {s.name for s in spans}
    assert {format(s.context.trace_id, "032x") for s in spans} == {TRACE_ID}


async def test_untraced_messages_make_no_spans(traced: BrokerServer, exporter: Any) -> None:
    """A message without a traceparent makes no span (the publisher decides what is traced)."""
    token = (await login(traced.url))["access_token"]
    async with httpx.AsyncClient(
        base_url=traced.url, headers={"Authorization": f"Bearer {token}"}
    ) as client:
        await make_queue(client)
        assert (await client.post("/queues/jobs/messages", json={"content": 1})).status_code == 201
        assert (await client.get("/queues/jobs/messages/consume")).status_code == 200
    assert exporter.get_finished_spans() == ()


async def test_a_graphql_subscription_delivery_makes_a_deliver_span(
    traced: BrokerServer, exporter: Any
) -> None:
    """A delivery to a GraphQL messages subscription makes a deliver span in the trace."""
    token = (await login(traced.url))["access_token"]
    async with httpx.AsyncClient(
        base_url=traced.url, headers={"Authorization": f"Bearer {token}"}
    ) as client:
        await make_queue(client)
        await publish_with_http_header(client)
        headers = await graphql_delivered_headers(traced, token)
    assert headers["traceparent"] == TRACEPARENT
    delivered = [s for s in exporter.get_finished_spans() if s.name == "deliver jobs"]
    assert [s.attributes["network.protocol.name"] for s in delivered] == ["graphql"]
    assert format(delivered[0].context.trace_id, "032x") == TRACE_ID


def test_otel_without_the_extra_is_a_one_line_start_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BROKER_OTEL with opentelemetry not importable refuses to start, saying what to install."""
    import sys

    from transports.observability.tracing import tracing_from_settings
    from transports.startup import StartError

    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    assert tracing_from_settings(make_settings(tmp_path, otel=False)) is None
    with pytest.raises(StartError, match=r"wsbroker\[otel\]"):
        tracing_from_settings(make_settings(tmp_path, otel=True))
