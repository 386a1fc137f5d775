"""API fuzzing: schemathesis drives every REST operation of ``/schema/openapi.json``.

Schemathesis loads the broker's own OpenAPI document from a real server on
127.0.0.1 (`schemathesis.openapi.from_url`, with an admin token) and, for
every operation, sends examples that fit the schema (positive) and examples
that don't (negative), all with the admin token. Two checks hold for every
answer: no 5xx, and an answer whose status the schema documents has the
body the schema gives for it (``response_schema_conformance``).

The requests are blocking (``requests``), so they run in a worker thread
while the server runs on the test's event loop. Examples are bounded per
operation and mode; shrinking is off (it replays against a live server).
A case that would delete or change the admin user whose token the fuzzer
holds is skipped: that token is what lets the fuzzer reach everything else.

Random names mostly answer 404, so half of the cases are pointed at a queue
that exists (``fuzz``, holding messages, recreated when a case deleted it)
and at message ids that exist, to reach the code behind the lookups.

A second fuzzer sends hostile JSON to every route that takes a body (each
operation of the schema with one, plus ``/auth/token``, ``/login`` and
``/graphql``), with and without a token: near-valid bodies with invalid
UTF-8, overlong forms, encoded or escaped lone surrogates spliced into a
string, and nesting from a few levels to thousands. No answer is a 5xx,
each refused one is a 4xx with its error body, and nothing reaches the
broker's ``last_error`` or logs an ERROR record.

The regressions the fuzzing found follow, one test each: ids past 64 bits
reached SQLite (500), and instants past the year 9999 (a ``ttl_ms`` or
``delay_ms`` of millennia, accepted with 201) broke every later view of the
message (500).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings, strategies as st
from hypothesis.errors import Unsatisfiable
from loguru import logger
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import response_schema_conformance

if TYPE_CHECKING:
    from tests.conftest import BrokerServer

EXAMPLES = 25
"""Examples per operation and generation mode."""
KNOWN_QUEUE = "fuzz"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Long polls end within 0.2 s: a fuzzed ``wait`` must not hold the run for 20 s."""
    return {"max_wait_s": 0.2}


class Fuzz:
    """What the fuzzing saw: requests by status class, 5xx answers and failures."""

    def __init__(self) -> None:
        self.statuses: Counter[str] = Counter()
        self.server_errors: list[str] = []
        self.failures: dict[str, str] = {}
        self.operations = 0


def _protected(case: Any) -> bool:
    """Whether the case would delete or change (revoking its tokens) the fuzzer's own user."""
    username = (case.path_parameters or {}).get("username")
    return username == "admin" and case.method.upper() in ("DELETE", "PATCH")


def _seed(session: requests.Session, url: str, headers: dict[str, str]) -> None:
    """Make sure queue ``fuzz`` exists and holds messages, some of them leased."""
    created = session.post(f"{url}/queues", json={"name": KNOWN_QUEUE}, headers=headers)
    if created.status_code == 201:
        messages = [{"content": {"n": n}} for n in range(20)]
        session.post(
            f"{url}/queues/{KNOWN_QUEUE}/messages/batch",
            json={"messages": messages},
            headers=headers,
        )
        session.get(
            f"{url}/queues/{KNOWN_QUEUE}/messages/consume",
            params={"max": 5},
            headers=headers,
        )


def _fuzz(url: str, token: str, fuzz: Fuzz) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    schema = schemathesis.openapi.from_url(f"{url}/schema/openapi.json", headers=headers)
    checks = [not_a_server_error, response_schema_conformance]
    with requests.Session() as session:
        _seed(session, url, headers)
        for result in schema.get_all_operations():
            if isinstance(result, Err):
                raise AssertionError(f"the schema has an invalid operation: {result.err()}")
            operation = result.ok()
            fuzz.operations += 1
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @settings(
                    max_examples=EXAMPLES,
                    deadline=None,
                    database=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
                @given(
                    case=operation.as_strategy(generation_mode=mode),
                    known=st.booleans(),
                    message_id=st.integers(1, 40),
                )
                def check(case: Any, known: bool, message_id: int) -> None:
                    if _protected(case):
                        return
                    path = case.path_parameters
                    if known and path:
                        _seed(session, url, headers)
                        if "name" in path:
                            path["name"] = KNOWN_QUEUE
                        if "message_id" in path:
                            path["message_id"] = message_id
                    response = case.call(base_url=url, session=session, headers=headers, timeout=30)
                    fuzz.statuses[f"{response.status_code // 100}xx"] += 1
                    if response.status_code >= 500:
                        fuzz.server_errors.append(
                            f"{case.method} {case.formatted_path} -> {response.status_code}"
                        )
                    case.validate_response(response, checks=checks, headers=headers)

                try:
                    check()
                except Unsatisfiable:
                    # An open operation without parameters or body (``GET /health``,
                    # ``security: []``) has nothing a negative case could break.
                    if mode is not GenerationMode.NEGATIVE:
                        raise
                except Exception as exc:
                    fuzz.failures[f"{operation.label} ({mode.value})"] = str(exc)[:2000]


@pytest.mark.timeout(360)  # 40 operations x 50 cases: past the default 120 s on a busy machine
async def test_every_operation_answers_without_5xx_and_to_its_schema(
    server: BrokerServer, admin_token: str
) -> None:
    """Fuzzed requests to every REST operation get no 5xx and answers that fit the schema."""
    fuzz = Fuzz()
    await asyncio.to_thread(_fuzz, server.url, admin_token, fuzz)
    print(
        f"fuzzed {fuzz.operations} operations: {sum(fuzz.statuses.values())} requests, "
        f"{dict(sorted(fuzz.statuses.items()))}, 5xx: {len(fuzz.server_errors)}"
    )
    assert fuzz.operations >= 30
    assert not fuzz.server_errors
    assert not fuzz.failures, "\n\n".join(f"{k}:\n{v}" for k, v in fuzz.failures.items())


# -- hostile bodies ------------------------------------------------------------------------

HOSTILE_EXAMPLES = 400
BAD_BYTES = [b"\xff", b"\xfe\xff", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xed\xbf\xbf",
             b"\x80", b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80"]  # fmt: skip
BAD_ESCAPES = [rb"\ud800", rb"\udbff", rb"\udc00", rb"\udfff", rb"\udc00\ud800", rb"\ud800\u0041"]
FIELDS = ["content", "name", "username", "password", "refresh_token", "ids", "messages", "queues",
          "headers", "permissions", "query", "variables", "lease", "max_attempts", "x"]  # fmt: skip

plain = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
documents = st.dictionaries(st.sampled_from(FIELDS), plain, min_size=1, max_size=4).map(
    lambda value: json.dumps(value).encode()
)


@st.composite
def hostile_bodies(draw: st.DrawFn) -> bytes:
    """A near-valid JSON body with bad bytes or an escaped lone surrogate in a string, or deep."""
    body = draw(documents)
    kind = draw(st.sampled_from(["bytes", "escape", "deep", "deep-raw", "both"]))
    if kind in ("bytes", "escape", "both"):
        quotes = [i for i, byte in enumerate(body) if byte == ord('"')]
        at = draw(st.sampled_from(quotes)) + 1
        bad = draw(st.sampled_from(BAD_BYTES if kind != "escape" else BAD_ESCAPES))
        body = body[:at] + bad + body[at:]
    if kind in ("deep", "deep-raw", "both"):
        depth = draw(st.integers(100, 5000))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        deep = opener * depth + b"1" + closer * depth
        if kind == "deep-raw":
            return deep
        field = draw(st.sampled_from(FIELDS)).encode()
        body = b'{"' + field + b'": ' + deep + b", " + body[1:]
    return body


def _body_routes(url: str, headers: dict[str, str]) -> list[tuple[str, str]]:
    """Every operation of the schema that takes a body, plus the ones it doesn't describe."""
    schema = httpx.get(f"{url}/schema/openapi.json", headers=headers).json()
    routes = {("POST", "/auth/token"), ("POST", "/login"), ("POST", "/graphql")}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if isinstance(operation, dict) and "requestBody" in operation:
                concrete = path.replace("{name}", KNOWN_QUEUE).replace("{message_id}", "1")
                routes.add((method.upper(), concrete.replace("{username}", "nobody")))
    return sorted(routes)


class Hostile:
    """What the hostile-body fuzzer sent and got."""

    def __init__(self) -> None:
        self.statuses: Counter[str] = Counter()
        self.codes: Counter[str] = Counter()
        self.server_errors: list[str] = []
        self.examples = 0


def _fuzz_hostile(url: str, token: str, hostile: Hostile) -> list[tuple[str, str]]:
    headers = {"Authorization": f"Bearer {token}"}
    routes = _body_routes(url, headers)
    with httpx.Client(base_url=url, timeout=30) as http:
        http.post("/queues", json={"name": KNOWN_QUEUE}, headers=headers)

        @settings(
            max_examples=HOSTILE_EXAMPLES,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(route=st.sampled_from(routes), body=hostile_bodies(), authorized=st.booleans())
        def check(route: tuple[str, str], body: bytes, authorized: bool) -> None:
            method, path = route
            response = http.request(
                method,
                path,
                content=body,
                headers={"content-type": "application/json", **(headers if authorized else {})},
            )
            hostile.examples += 1
            hostile.statuses[f"{response.status_code // 100}xx"] += 1
            if response.status_code >= 500:
                hostile.server_errors.append(f"{method} {path} -> {response.status_code}")
                return
            if response.status_code >= 400:
                answer = response.json()
                hostile.codes[str(answer.get("code"))] += 1
                assert isinstance(answer.get("detail"), str), (method, path, answer)

        check()
    return routes


async def test_hostile_bodies_on_every_route_get_no_5xx(
    server: BrokerServer, admin_token: str
) -> None:
    """Invalid UTF-8, lone surrogates and deep nesting on every body route get a 4xx, no ERROR."""
    records: list[str] = []
    sink = logger.add(lambda message: records.append(str(message)), level="ERROR")
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            auth = {"Authorization": f"Bearer {admin_token}"}
            before = (await http.get("/stats", headers=auth)).json()["last_error"]
            hostile = Hostile()
            routes = await asyncio.to_thread(_fuzz_hostile, server.url, admin_token, hostile)
            after = (await http.get("/stats", headers=auth)).json()["last_error"]
    finally:
        logger.remove(sink)
    print(
        f"hostile bodies: {hostile.examples} requests over {len(routes)} routes, "
        f"{dict(sorted(hostile.statuses.items()))}, codes {dict(hostile.codes.most_common())}"
    )
    assert len(routes) >= 15
    assert not hostile.server_errors
    assert hostile.codes["invalid_encoding"] > 0 and hostile.codes["too_deep"] > 0
    assert after == before
    assert records == []


# -- regressions ---------------------------------------------------------------------------

BEYOND_64_BITS = 2**64
MILLENNIA_MS = 2**70


async def test_message_id_beyond_64_bits_is_not_found(client: httpx.AsyncClient) -> None:
    """GET of a message id past 64 bits answers 404, not 500."""
    await client.post("/queues", json={"name": "q"})
    response = await client.get(f"/queues/q/messages/{BEYOND_64_BITS}")
    assert response.status_code == 404, response.text


async def test_retry_of_an_id_beyond_64_bits_is_not_found(client: httpx.AsyncClient) -> None:
    """Retrying a message id past 64 bits answers 404, not 500."""
    await client.post("/queues", json={"name": "q"})
    response = await client.post(f"/queues/q/messages/{BEYOND_64_BITS}/retry")
    assert response.status_code == 404, response.text


async def test_browse_cursor_beyond_64_bits_is_an_empty_page(client: httpx.AsyncClient) -> None:
    """Browsing after a cursor past 64 bits answers an empty last page."""
    await client.post("/queues", json={"name": "q"})
    await client.post("/queues/q/messages", json={"content": 1})
    response = await client.get("/queues/q/messages", params={"cursor": BEYOND_64_BITS})
    assert response.status_code == 200, response.text
    assert response.json() == {"messages": [], "next_cursor": None}


async def test_ttl_or_delay_of_millennia_is_refused(client: httpx.AsyncClient) -> None:
    """A ttl_ms or delay_ms of millennia answers 422 instead of storing a poison message."""
    await client.post("/queues", json={"name": "q"})
    for field in ("ttl_ms", "delay_ms"):
        response = await client.post("/queues/q/messages", json={"content": 1, field: MILLENNIA_MS})
        assert response.status_code == 422, response.text


async def test_message_expiring_after_the_year_9999_is_browsed(client: httpx.AsyncClient) -> None:
    """A message due at the end of time with a TTL past it is pending and browses as 200."""
    await client.post("/queues", json={"name": "q"})
    body = {"content": 1, "deliver_at": "9999-12-31T00:00:00Z", "ttl_ms": 2**32 - 1}
    assert (await client.post("/queues/q/messages", json=body)).status_code == 201
    response = await client.get("/queues/q/messages")
    assert response.status_code == 200, response.text
    [message] = response.json()["messages"]
    assert (message["status"], message["deliver_at"][:4]) == ("pending", "9999")
    assert message["expires_at"].startswith("9999-12-31T23:59:59")


async def test_result_history_cancel_reschedule_of_an_id_beyond_64_bits_are_not_found(
    client: httpx.AsyncClient,
) -> None:
    """The routes of results, history, cancel and reschedule answer 404 past 64 bits, not 500."""
    await client.post("/queues", json={"name": "q"})
    for method, path, body in (
        ("GET", f"/messages/{BEYOND_64_BITS}/result", None),
        ("GET", f"/messages/{BEYOND_64_BITS}/history", None),
        ("DELETE", f"/queues/q/messages/{BEYOND_64_BITS}", None),
        ("PATCH", f"/queues/q/messages/{BEYOND_64_BITS}", {"delay_ms": 1000}),
    ):
        response = await client.request(method, path, json=body)
        assert response.status_code == 404, f"{method} {path}: {response.text}"
