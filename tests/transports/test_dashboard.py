"""The dashboard at ``/dashboard``, driven in a real browser against a real broker.

Chromium is Debian's (``/usr/bin/chromium``), started once per module and
driven by Playwright over CDP, one fresh browser context per test; the tests
skip when either is missing. Each test saves a screenshot in its ``tmp_path``.

The screenshot of the docs is made by the one test skipped by default::

    BROKER_DASHBOARD_SCREENSHOT=docs/dashboard.png .venv/bin/pytest \
        tests/transports/test_dashboard.py -k docs
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
import pytest
from websockets.asyncio.client import connect as ws_connect

from tests.conftest import ADMIN_PASSWORD, MS, REPO, make_user
from transports.dashboard import content_security_policy

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

    from playwright.async_api import BrowserContext, Page

    from tests.conftest import BrokerServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
HAVE_PLAYWRIGHT = importlib.util.find_spec("playwright") is not None
BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"
    ),
    pytest.mark.skipif(not HAVE_PLAYWRIGHT, reason="needs the playwright package (test extra)"),
]

WAIT_MS = 10_000 * MS * 1000
"""Playwright timeouts are in milliseconds: ten seconds of test time."""
LOG_NAME = "broker_2030-01-02_03.jsonl"


def log_line(level: str, message: str, minute: int = 4, **extra: Any) -> bytes:
    record = {
        "time": f"2030-01-02T03:{minute:02d}:05.000000Z",
        "level": level,
        "message": message,
        "logger": "tests",
        "module": "test_dashboard",
        "function": "log_line",
        "line": 1,
        "extra": extra,
        "exception": None,
    }
    return msgspec.json.encode(record) + b"\n"


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One headless chromium for the module; yields its DevTools WebSocket URL.

    Tests connect to it over CDP, each in a fresh browser context (its own
    storage): launching a browser per test would cost a second or more each.
    A plain process, not a Playwright object, so that it outlives each test's
    event loop.
    """
    profile = tmp_path_factory.mktemp("chromium-profile")
    process = subprocess.Popen(
        [str(CHROMIUM), *CHROMIUM_ARGS, "--remote-debugging-port=0", f"--user-data-dir={profile}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Chromium writes the port it picked, then the browser target's path.
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 20_000 * MS
        while not (active.exists() and len(active.read_text().split()) >= 2):
            assert process.poll() is None, f"chromium exited with {process.returncode}"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(20 * MS)
        port, path = active.read_text().split()[:2]
        yield f"ws://127.0.0.1:{port}{path}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
async def context(chromium: str) -> AsyncIterator[BrowserContext]:
    """A fresh browser context (no storage shared with other tests) of the module's chromium."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.connect_over_cdp(chromium)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            try:
                yield context
            finally:
                await context.close()
        finally:
            await browser.close()  # disconnects; the process lives on for the next test


@pytest.fixture
async def page(
    context: BrowserContext, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Page]:
    """A fresh page; fails the test on a script error or a CSP violation, and screenshots it."""
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    page.on(
        "console",
        lambda message: (
            problems.append(f"console: {message.text}")
            if "Content Security Policy" in message.text or "Trusted Type" in message.text
            else None
        ),
    )
    try:
        yield page
        assert not problems, problems
    finally:
        await page.screenshot(path=tmp_path / f"{request.node.name}.png", full_page=True)
        await page.close()


async def sign_in(
    page: Page,
    server: BrokerServer,
    username: str = "admin",
    password: str = ADMIN_PASSWORD,
    hash: str = "",
) -> None:
    """Open the dashboard and log in through its form."""
    from playwright.async_api import expect

    await page.goto(f"{server.url}/dashboard/{hash}")
    await page.fill("#login-username", username)
    await page.fill("#login-password", password)
    await page.click("#login-form button[type=submit]")
    await expect(page.locator("#app")).to_be_visible(timeout=WAIT_MS)
    await expect(page.locator("#live")).to_have_text("live", timeout=WAIT_MS)


async def confirm(page: Page) -> None:
    """Accept the page's confirmation dialog."""
    await page.locator("#confirm-ok").click(timeout=WAIT_MS)


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait until the async ``check()`` is true."""
    deadline = time.monotonic() + 10_000 * MS
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(50 * MS)


# -- served as static files, under a strict CSP ---------------------------------------------


async def test_dashboard_is_served_with_a_strict_csp(server: BrokerServer) -> None:
    """/dashboard and /dashboard/ serve the page without a token, under a strict CSP."""
    async with httpx.AsyncClient(base_url=server.url) as http:
        for path in ("/dashboard", "/dashboard/", "/dashboard/app.js"):
            response = await http.get(path)
            assert response.status_code == 200, path
            csp = response.headers["content-security-policy"]
            directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
            assert directives["default-src"] == "'self'"
            assert directives["script-src"] == "'self'"
            assert directives["style-src"] == "'self'"
            assert directives["frame-ancestors"] == "'none'"
            assert directives["img-src"] == "'self' data:"
            host = f"127.0.0.1:{server.port}"
            assert directives["connect-src"] == f"'self' ws://{host} wss://{host}"
            assert "unsafe" not in csp
        page = (await http.get("/dashboard/")).text
        assert "<title>" in page
        # No inline script, inline style or event-handler attribute.
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page)
        assert not re.search(r"<style|\sstyle=|\son[a-z]+=", page)


async def test_dashboard_csp_leaves_out_a_malformed_host(server: BrokerServer) -> None:
    """A Host header that isn't a plain host name never reaches the policy."""
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get("/dashboard/", headers={"Host": "evil*.example"})
    csp = response.headers["content-security-policy"]
    assert "evil" not in csp
    assert "connect-src 'self';" in csp
    # What the HTTP server would already refuse is refused here too.
    assert "evil" not in content_security_policy("evil; script-src *")


# -- in the browser -------------------------------------------------------------------------


def in_browser(test: Any) -> Any:
    """Mark ``test`` as a browser test, skipped without chromium or playwright."""
    for mark in reversed(BROWSER_MARKS):
        test = mark(test)
    return test


@in_browser
async def test_login_shows_the_overview(
    server: BrokerServer, page: Page, client: httpx.AsyncClient
) -> None:
    """Logging in shows the /stats KPIs and the live charts."""
    from playwright.async_api import expect

    for name in ("orders", "billing", "emails"):
        assert (await client.post("/queues", json={"name": name})).status_code == 201
    messages = [{"content": {"n": n}} for n in range(10)]
    for name in ("orders", "billing", "emails"):
        response = await client.post(f"/queues/{name}/messages/batch", json={"messages": messages})
        assert response.status_code == 201, response.text
    await sign_in(page, server)
    uptime = page.locator("[data-kpi=uptime] .value")
    await expect(uptime).to_have_text(re.compile(r"^\d+s$|^\d+m"), timeout=WAIT_MS)
    await expect(page.locator("[data-kpi=queues] .value")).to_have_text("3", timeout=WAIT_MS)
    await expect(page.locator("b[data-kpi=pending]")).to_have_text("30", timeout=WAIT_MS)
    await expect(page.locator("#depth-now [data-queue=orders] b")).to_have_text(
        "10", timeout=WAIT_MS
    )


@in_browser
async def test_wrong_password_shows_an_error(server: BrokerServer, page: Page) -> None:
    """A wrong password keeps the login form and says why."""
    from playwright.async_api import expect

    await page.goto(f"{server.url}/dashboard")
    await page.fill("#login-username", "admin")
    await page.fill("#login-password", "not-the-password")
    await page.click("#login-form button[type=submit]")
    await expect(page.locator("#login-error")).to_have_text(
        "Wrong username or password.", timeout=WAIT_MS
    )
    await expect(page.locator("#app")).to_be_hidden()


@in_browser
async def test_queue_created_over_rest_appears_without_reload(
    server: BrokerServer, page: Page, client: httpx.AsyncClient
) -> None:
    """A queue created through REST shows up in the open table."""
    from playwright.async_api import expect

    await sign_in(page, server, hash="#/queues")
    await expect(page.locator("#queues-empty")).to_be_visible(timeout=WAIT_MS)
    response = await client.post("/queues", json={"name": "invoices", "max_attempts": 4})
    assert response.status_code == 201, response.text
    row = page.locator('tr[data-queue="invoices"]')
    await expect(row).to_be_visible(timeout=WAIT_MS)
    await expect(row.locator("td.opts")).to_contain_text("max 4 attempts")


@in_browser
async def test_publishes_move_the_rate_chart_and_the_depth(
    server: BrokerServer, page: Page, client: httpx.AsyncClient
) -> None:
    """After publishes the publish rate rises, and the depth chart and table follow."""
    from playwright.async_api import expect

    assert (await client.post("/queues", json={"name": "jobs"})).status_code == 201
    await sign_in(page, server)
    publish_rate = page.locator("#rates-now [data-series=publish] b")
    await expect(publish_rate).to_have_text("0.0", timeout=WAIT_MS)
    points = int(await page.locator("#chart-rates").get_attribute("data-points") or 0)
    batch = [{"content": {"n": n}} for n in range(40)]
    response = await client.post("/queues/jobs/messages/batch", json={"messages": batch})
    assert response.status_code == 201, response.text
    await expect(publish_rate).not_to_have_text("0.0", timeout=WAIT_MS)
    await expect(page.locator("#depth-now [data-queue=jobs] b")).to_have_text("40", timeout=WAIT_MS)
    assert int(await page.locator("#chart-rates").get_attribute("data-points") or 0) > points
    await page.click("nav a[data-view=queues]")
    await expect(page.locator('tr[data-queue="jobs"] td[data-col=pending]')).to_have_text("40")


@in_browser
async def test_create_queue_from_the_page(
    server: BrokerServer, page: Page, client: httpx.AsyncClient
) -> None:
    """The New queue form creates a queue with its options."""
    from playwright.async_api import expect

    await sign_in(page, server, hash="#/queues")
    await page.click("#create-queue summary")
    form = page.locator("#create-queue-form")
    await form.locator("input[name=name]").fill("invoices")
    await form.locator("input[name=max_attempts]").fill("5")
    await form.locator("input[name=lease]").fill("12.5")
    await form.locator("button[type=submit]").click()
    await expect(page.locator('tr[data-queue="invoices"]')).to_be_visible(timeout=WAIT_MS)
    queue = (await client.get("/queues/invoices")).json()
    assert (queue["max_attempts"], queue["lease"]) == (5, 12.5)


@in_browser
async def test_purge_from_the_page_empties_the_queue(
    server: BrokerServer, page: Page, client: httpx.AsyncClient
) -> None:
    """Purge, confirmed in the page, leaves the queue empty as REST sees it."""
    from playwright.async_api import expect

    assert (await client.post("/queues", json={"name": "jobs"})).status_code == 201
    batch = [{"content": n} for n in range(5)]
    assert (
        await client.post("/queues/jobs/messages/batch", json={"messages": batch})
    ).status_code == 201
    await sign_in(page, server, hash="#/queues")
    pending = page.locator('tr[data-queue="jobs"] td[data-col=pending]')
    await expect(pending).to_have_text("5", timeout=WAIT_MS)
    await page.click('tr[data-queue="jobs"] button[data-action=purge]')
    await expect(page.locator("#confirm")).to_be_visible()
    await confirm(page)
    await expect(page.locator("#toasts")).to_contain_text("purged 5 messages", timeout=WAIT_MS)
    await expect(pending).to_have_text("0", timeout=WAIT_MS)
    assert (await client.get("/queues/jobs")).json()["pending"] == 0


@in_browser
async def test_delete_needs_a_confirmation(
    server: BrokerServer, page: Page, client: httpx.AsyncClient
) -> None:
    """Delete asks first: cancelled it keeps the queue, confirmed it removes it."""
    from playwright.async_api import expect

    assert (await client.post("/queues", json={"name": "old"})).status_code == 201
    await sign_in(page, server, hash="#/queues")
    row = page.locator('tr[data-queue="old"]')
    await row.locator("button[data-action=delete]").click(timeout=WAIT_MS)
    await page.locator("#confirm button[value=cancel]").click()
    assert (await client.get("/queues/old")).status_code == 200
    await row.locator("button[data-action=delete]").click()
    await confirm(page)
    await expect(row).to_have_count(0, timeout=WAIT_MS)
    assert (await client.get("/queues/old")).status_code == 404


@in_browser
async def test_retry_from_the_failed_view_makes_the_message_pending(
    server: BrokerServer, page: Page, client: httpx.AsyncClient
) -> None:
    """A failed message retried from the page's failed view is pending again."""
    from playwright.async_api import expect

    assert (await client.post("/queues", json={"name": "jobs"})).status_code == 201
    published = await client.post("/queues/jobs/messages", json={"content": {"to": "fail"}})
    message_id = published.json()["message_id"]
    leased = await client.get("/queues/jobs/messages/consume", params={"max": 1})
    assert leased.json()["messages"][0]["message_id"] == message_id
    nacked = await client.post(f"/messages/{message_id}/nack", params={"requeue": "false"})
    assert nacked.json()["status"] == "failed"

    await sign_in(page, server, hash="#/queues/jobs")
    await page.click("#status-filter button[data-status=failed]")
    row = page.locator(f'#messages-table tr[data-message="{message_id}"]')
    await expect(row).to_have_attribute("data-status", "failed", timeout=WAIT_MS)
    await row.locator("button[data-action=retry]").click()
    await expect(page.locator("#toasts")).to_contain_text(
        f"message {message_id} is pending again", timeout=WAIT_MS
    )
    await expect(row).to_have_count(0, timeout=WAIT_MS)
    message = (await client.get(f"/queues/jobs/messages/{message_id}")).json()
    assert message["status"] == "pending"


@in_browser
async def test_queue_view_shows_its_schedules_and_pauses_one(
    server: BrokerServer, page: Page, client: httpx.AsyncClient
) -> None:
    """The queue view lists its schedules (expression, next fire, paused); Pause pauses one."""
    from playwright.async_api import expect

    assert (await client.post("/queues", json={"name": "jobs"})).status_code == 201
    body = {"name": "nightly", "cron": "0 3 * * *", "timezone": "Europe/Riga", "content": 1}
    assert (await client.post("/queues/jobs/schedules", json=body)).status_code == 201

    await sign_in(page, server, hash="#/queues/jobs")
    row = page.locator('#schedules-table tr[data-schedule="nightly"]')
    await expect(row).to_contain_text("0 3 * * *", timeout=WAIT_MS)
    await expect(row).to_contain_text("Europe/Riga")
    await expect(row).to_have_attribute("data-paused", "false")
    await row.locator("button[data-action=pause]").click()
    await expect(page.locator("#toasts")).to_contain_text("schedule nightly paused")
    await expect(row).to_have_attribute("data-paused", "true", timeout=WAIT_MS)
    shown = (await client.get("/queues/jobs/schedules/nightly")).json()
    assert shown["paused"] is True


@in_browser
async def test_redrive_moves_dead_lettered_messages_back(
    server: BrokerServer, page: Page, client: httpx.AsyncClient
) -> None:
    """Redrive on a dead-letter queue sends its messages back to the queue they came from."""
    from playwright.async_api import expect

    assert (await client.post("/queues", json={"name": "jobs.dlq"})).status_code == 201
    queue = {"name": "jobs", "dead_letter_queue": "jobs.dlq"}
    assert (await client.post("/queues", json=queue)).status_code == 201
    batch = [{"content": n} for n in range(3)]
    assert (
        await client.post("/queues/jobs/messages/batch", json={"messages": batch})
    ).status_code == 201
    leased = (await client.get("/queues/jobs/messages/consume", params={"max": 3})).json()
    ids = [m["message_id"] for m in leased["messages"]]
    nacked = await client.post("/messages/nack", json={"ids": ids, "requeue": False})
    assert sorted(nacked.json()["settled"]) == sorted(ids)

    await sign_in(page, server, hash="#/queues/jobs.dlq")
    rows = page.locator("#messages-table tbody tr")
    await expect(rows).to_have_count(3, timeout=WAIT_MS)
    await expect(rows.first).to_contain_text("dead-lettered from jobs")
    await page.click("#redrive")
    await expect(page.locator("#toasts")).to_contain_text("moved 3 messages", timeout=WAIT_MS)
    await expect(rows).to_have_count(0, timeout=WAIT_MS)
    assert (await client.get("/queues/jobs")).json()["pending"] == 3


@in_browser
async def test_message_browser_pages_with_the_cursor(
    server: BrokerServer, page: Page, client: httpx.AsyncClient
) -> None:
    """Browsing shows 25 messages a page; Next and Previous follow next_cursor."""
    from playwright.async_api import expect

    assert (await client.post("/queues", json={"name": "jobs"})).status_code == 201
    batch = [{"content": n} for n in range(30)]
    assert (
        await client.post("/queues/jobs/messages/batch", json={"messages": batch})
    ).status_code == 201
    await sign_in(page, server, hash="#/queues/jobs")
    rows = page.locator("#messages-table tbody tr")
    await expect(rows).to_have_count(25, timeout=WAIT_MS)
    await page.click("#page-next")
    await expect(rows).to_have_count(5, timeout=WAIT_MS)
    await expect(page.locator("#page-next")).to_be_disabled()
    await page.click("#page-prev")
    await expect(rows).to_have_count(25, timeout=WAIT_MS)


@in_browser
async def test_log_viewer_filters_by_level_and_text(server: BrokerServer, page: Page) -> None:
    """The log viewer narrows the records by minimum level and by text, and charts them."""
    from playwright.async_api import expect

    logs_dir = server.settings.logs_dir
    logs_dir.mkdir(parents=True, exist_ok=True)
    (logs_dir / LOG_NAME).write_bytes(
        b"".join(
            [
                log_line("INFO", "broker started", minute=1),
                log_line("DEBUG", "delivered", minute=1, queue="jobs"),
                log_line("WARNING", "slow consumer", minute=2, queue="orders"),
                log_line("ERROR", "flush failed: disk full", minute=3),
                log_line("ERROR", "flush failed: timeout", minute=3),
                log_line("INFO", "queue created", minute=3, queue="orders"),
            ]
        )
    )
    await sign_in(page, server, hash="#/logs")
    rows = page.locator("#log-table tbody tr")
    await expect(rows).to_have_count(6, timeout=WAIT_MS)
    await expect(page.locator("#logs-now [data-level=ERROR] b")).to_have_text("2")
    await page.select_option("#log-level", "ERROR")
    await expect(rows).to_have_count(2, timeout=WAIT_MS)
    await expect(page.locator("#logs-now [data-level=INFO] b")).to_have_text("0")
    await page.fill("#log-search", "DISK")
    await expect(rows).to_have_count(1, timeout=WAIT_MS)
    await expect(rows.first).to_contain_text("flush failed: disk full")
    await page.select_option("#log-level", "")
    await page.fill("#log-search", "orders")
    await expect(rows).to_have_count(2, timeout=WAIT_MS)
    await expect(page.locator("#log-table tbody tr[data-level=WARNING]")).to_have_count(1)


@in_browser
async def test_log_viewer_follows_new_records(server: BrokerServer, page: Page) -> None:
    """With Follow on, records appended to the file show up without a click."""
    from playwright.async_api import expect

    logs_dir = server.settings.logs_dir
    logs_dir.mkdir(parents=True, exist_ok=True)
    path = logs_dir / LOG_NAME
    path.write_bytes(log_line("INFO", "first record"))
    await sign_in(page, server, hash="#/logs")
    rows = page.locator("#log-table tbody tr")
    await expect(rows).to_have_count(1, timeout=WAIT_MS)
    await page.check("#log-follow")
    with path.open("ab") as file:
        file.write(log_line("WARNING", "second record") + log_line("ERROR", "third record"))
    await expect(rows).to_have_count(3, timeout=WAIT_MS)
    await expect(rows.last).to_contain_text("third record")


@in_browser
async def test_user_without_manage_sees_no_purge_or_delete(
    server: BrokerServer, page: Page, client: httpx.AsyncClient
) -> None:
    """A user without manage sees only its queues, with no purge, delete or create."""
    from playwright.async_api import expect

    await make_user(
        client, server, "worker", [{"pattern": "orders.*", "actions": ["publish", "consume"]}]
    )
    for name in ("orders.eu", "secret"):
        assert (await client.post("/queues", json={"name": name})).status_code == 201
    await sign_in(page, server, "worker", "worker-password", hash="#/queues")
    await expect(page.locator('tr[data-queue="orders.eu"]')).to_be_visible(timeout=WAIT_MS)
    await expect(page.locator('tr[data-queue="secret"]')).to_have_count(0)
    await expect(page.locator("button[data-action=purge]")).to_have_count(0)
    await expect(page.locator("button[data-action=delete]")).to_have_count(0)
    await expect(page.locator("#create-queue")).to_be_hidden()
    await expect(page.locator("nav a[data-view=logs]")).to_be_hidden()
    # It may publish and browse, but not retry or redrive.
    await page.click('tr[data-queue="orders.eu"] a')
    await expect(page.locator("#publish-form")).to_be_visible(timeout=WAIT_MS)
    await expect(page.locator("#browser")).to_be_visible()
    await expect(page.locator("#redrive")).to_be_hidden()
    await page.click("#publish-form button[type=submit]")
    await expect(page.locator("#messages-table tbody tr")).to_have_count(1, timeout=WAIT_MS)


@in_browser
async def test_consumers_view_lists_push_consumers(
    server: BrokerServer, page: Page, client: httpx.AsyncClient, admin_token: str
) -> None:
    """A WebSocket consumer shows up with its queue, prefetch and unacked deliveries."""
    from playwright.async_api import expect

    assert (await client.post("/queues", json={"name": "jobs"})).status_code == 201
    batch = [{"content": n} for n in range(2)]
    assert (
        await client.post("/queues/jobs/messages/batch", json={"messages": batch})
    ).status_code == 201
    async with ws_connect(
        f"{server.ws_url}/ws", additional_headers={"Authorization": f"Bearer {admin_token}"}
    ) as consumer:
        await consumer.send(json.dumps({"op": "subscribe", "queue": "jobs", "prefetch": 5}))
        ops = [json.loads(await consumer.recv())["op"] for _ in range(3)]
        assert ops == ["subscribed", "deliver", "deliver"], ops
        await sign_in(page, server, hash="#/consumers")
        row = page.locator('#consumers-table tr[data-queue="jobs"]')
        await expect(row).to_have_count(1, timeout=WAIT_MS)
        cells = row.locator("td")
        await expect(cells.nth(3)).to_have_text("5")
        await expect(cells.nth(4)).to_have_text("2")
    await expect(row).to_have_count(0, timeout=WAIT_MS)


@in_browser
async def test_phone_screen_needs_no_sideways_scrolling(
    server: BrokerServer, page: Page, client: httpx.AsyncClient
) -> None:
    """On a phone-sized screen every view fits the width: tables become labelled cards."""
    from playwright.async_api import expect

    options = {
        "max_attempts": 3,
        "max_length": 1000,
        "dead_letter_queue": "a-long-dead-letter-queue",
    }
    assert (
        await client.post("/queues", json={"name": "a-long-dead-letter-queue"})
    ).status_code == 201
    assert (await client.post("/queues", json={"name": "orders", **options})).status_code == 201
    body = {"content": {"text": "a rather long message body " * 8}}
    assert (await client.post("/queues/orders/messages", json=body)).status_code == 201
    await page.set_viewport_size({"width": 390, "height": 844})
    await sign_in(page, server, hash="#/queues/orders")
    await expect(page.locator("#messages-table tbody tr")).to_have_count(1, timeout=WAIT_MS)
    assert (
        await page.locator('tr[data-queue="orders"] td[data-col=pending]').get_attribute(
            "data-label"
        )
        == "Pending"
    )
    for view in ("#/queues/orders", "#/overview", "#/consumers", "#/logs"):
        await page.goto(f"{server.url}/dashboard/{view}")
        await expect(page.locator("#app")).to_be_visible(timeout=WAIT_MS)
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{view} is {overflow}px too wide"


@in_browser
@pytest.mark.parametrize("settings_overrides", [{"access_token_ttl_s": 3}])
async def test_access_token_is_refreshed_before_it_expires(
    server: BrokerServer, page: Page, client: httpx.AsyncClient
) -> None:
    """The page rotates its tokens before the 3 s access token runs out, and keeps working."""
    from playwright.async_api import expect

    await sign_in(page, server, hash="#/queues")
    key = "wsbroker.dashboard.session"
    first = await page.evaluate(f"JSON.parse(sessionStorage.getItem('{key}')).refresh")

    async def rotated() -> bool:
        now = await page.evaluate(f"JSON.parse(sessionStorage.getItem('{key}')).refresh")
        return bool(now != first)

    await eventually(rotated, "the refresh token to rotate")
    # The page keeps working on its new tokens.
    assert (await client.post("/queues", json={"name": "later"})).status_code == 201
    await expect(page.locator('tr[data-queue="later"]')).to_be_visible(timeout=WAIT_MS)


@in_browser
async def test_logout_revokes_the_refresh_token(server: BrokerServer, page: Page) -> None:
    """Log out returns to the login form, forgets the tokens and revokes them at the broker."""
    from playwright.async_api import expect

    await sign_in(page, server)
    key = "wsbroker.dashboard.session"
    refresh = await page.evaluate(f"JSON.parse(sessionStorage.getItem('{key}')).refresh")
    await page.click("#logout")
    await expect(page.locator("#login")).to_be_visible(timeout=WAIT_MS)
    assert await page.evaluate(f"sessionStorage.getItem('{key}')") is None
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.post("/auth/refresh", json={"refresh_token": refresh})
    assert response.status_code == 401


@in_browser
@pytest.mark.skipif(
    not os.environ.get("BROKER_DASHBOARD_SCREENSHOT"),
    reason="writes the docs' screenshot only when BROKER_DASHBOARD_SCREENSHOT names its path",
)
async def test_overview_screenshot_for_the_docs(
    server: BrokerServer, page: Page, client: httpx.AsyncClient, admin_token: str
) -> None:
    """Half a minute of traffic, then a picture of the overview (docs/dashboard.png)."""
    from playwright.async_api import expect

    queues = [
        {"name": "orders.dlq"},
        {"name": "orders", "max_attempts": 2, "dead_letter_queue": "orders.dlq"},
        {"name": "emails"},
        {"name": "billing", "max_length": 5000},
    ]
    for queue in queues:
        assert (await client.post("/queues", json=queue)).status_code == 201

    async def produce() -> None:
        n = 0
        while True:
            n += 1
            for queue, size in (("orders", 2 + n % 7), ("emails", 5 + n % 11), ("billing", n % 3)):
                if size:
                    batch = [{"content": {"n": n, "i": i}} for i in range(size)]
                    await client.post(f"/queues/{queue}/messages/batch", json={"messages": batch})
            await asyncio.sleep(150 * MS)

    async def consume(queue: str, prefetch: int, fail_every: int) -> None:
        headers = {"Authorization": f"Bearer {admin_token}"}
        async with ws_connect(f"{server.ws_url}/ws", additional_headers=headers) as ws:
            await ws.send(json.dumps({"op": "subscribe", "queue": queue, "prefetch": prefetch}))
            count = 0
            async for data in ws:
                frame = json.loads(data)
                if frame["op"] != "deliver":
                    continue
                count += 1
                if fail_every and count % fail_every == 0:
                    frame_out = {"op": "nack", "tags": [frame["tag"]], "requeue": False}
                else:
                    frame_out = {"op": "ack", "tags": [frame["tag"]]}
                await asyncio.sleep(5 * MS)
                await ws.send(json.dumps(frame_out))

    tasks = [
        asyncio.create_task(produce()),
        asyncio.create_task(consume("emails", 20, 0)),
        asyncio.create_task(consume("orders", 10, 12)),
    ]
    try:
        await page.set_viewport_size({"width": 1280, "height": 860})
        await sign_in(page, server)
        await asyncio.sleep(30_000 * MS)  # history for the charts, not a timed assertion
        await expect(page.locator("[data-kpi=queues] .value")).to_have_text("4")
        target = REPO / os.environ["BROKER_DASHBOARD_SCREENSHOT"]
        target.parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=target, full_page=True)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@in_browser
async def test_an_admin_creates_and_revokes_a_service_token(
    server: BrokerServer, page: Page
) -> None:
    """The Tokens tab creates a token shown once (it scrapes /metrics) and revokes it."""
    from playwright.async_api import expect

    await sign_in(page, server, hash="#/tokens")
    await page.locator("#create-token summary").click()
    await page.fill("#create-token-form [name=name]", "prometheus")
    await page.fill("#create-token-form [name=scopes]", "metrics:read")
    await page.click("#create-token-form button[type=submit]")
    secret = page.locator("#token-secret")
    await expect(secret).to_have_text(re.compile(r"^wsb_"), timeout=WAIT_MS)
    token = await secret.text_content()
    assert token is not None
    row = page.locator("#tokens-table tbody tr")
    await expect(row).to_have_count(1, timeout=WAIT_MS)
    await expect(row).to_contain_text("metrics:read", timeout=WAIT_MS)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as machine:
        assert (await machine.get("/metrics")).status_code == 200
        await row.locator("[data-action=revoke]").click()
        await confirm(page)
        await expect(page.locator("#tokens-empty")).to_be_visible(timeout=WAIT_MS)
        assert (await machine.get("/metrics")).status_code == 401


@in_browser
async def test_the_tokens_tab_is_for_admins_only(
    server: BrokerServer, page: Page, client: httpx.AsyncClient
) -> None:
    """A user without admin doesn't get the Tokens tab."""
    from playwright.async_api import expect

    await make_user(client, server, "viewer", [{"pattern": "*", "actions": ["consume"]}])
    await sign_in(page, server, username="viewer", password="viewer-password")
    await expect(page.locator('.tabs a[data-view="tokens"]')).to_be_hidden(timeout=WAIT_MS)
