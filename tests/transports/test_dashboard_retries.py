"""The dashboard's retry bits in Chromium: the policy shown, pause/resume, back-off, cancel."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.transports.test_dashboard import (
    WAIT_MS,
    chromium,
    confirm,
    context,
    in_browser,
    page,
    sign_in,
)

if TYPE_CHECKING:
    import httpx
    from playwright.async_api import Page

    from tests.conftest import BrokerServer

__all__ = ["chromium", "context", "page"]


@in_browser
async def test_pause_button_and_retry_policy_in_the_queue_table(
    server: BrokerServer, page: Page, client: httpx.AsyncClient
) -> None:
    """The table shows the policy; Pause pauses the queue (as REST sees it), Resume resumes."""
    from playwright.async_api import expect

    retry = {"backoff": "linear", "min_ms": 500, "max_ms": 5000, "jitter": 0.0}
    assert (await client.post("/queues", json={"name": "jobs", "retry": retry})).status_code == 201
    await sign_in(page, server, hash="#/queues")
    row = page.locator('tr[data-queue="jobs"]')
    await expect(row.locator("td.opts")).to_contain_text(
        "retry linear 500-5,000 ms on nack, expired", timeout=WAIT_MS
    )
    button = row.locator("button[data-action=pause]")
    await expect(button).to_have_text("Pause", timeout=WAIT_MS)
    await button.click()
    await expect(button).to_have_text("Resume", timeout=WAIT_MS)
    await expect(row.locator("td.opts")).to_contain_text("paused")
    assert (await client.get("/queues/jobs")).json()["paused"] is True
    await button.click()
    await expect(button).to_have_text("Pause", timeout=WAIT_MS)
    assert (await client.get("/queues/jobs")).json()["paused"] is False


@in_browser
async def test_a_message_in_backoff_is_shown_as_such_and_can_be_cancelled(
    server: BrokerServer, page: Page, client: httpx.AsyncClient
) -> None:
    """A nacked message waiting its back-off has the `backoff` badge; Cancel removes it."""
    from playwright.async_api import expect

    retry = {"min_ms": 600_000, "jitter": 0.0}
    assert (await client.post("/queues", json={"name": "jobs", "retry": retry})).status_code == 201
    published = await client.post("/queues/jobs/messages", json={"content": "x"})
    message_id = published.json()["message_id"]
    await client.get("/queues/jobs/messages/consume")
    assert (await client.post(f"/messages/{message_id}/nack")).status_code == 200
    await sign_in(page, server, hash="#/queues/jobs")
    row = page.locator(f'#messages-table tr[data-message="{message_id}"]')
    await expect(row.locator(".badge")).to_have_text("backoff", timeout=WAIT_MS)
    await expect(row.locator("td.notes")).to_contain_text("in back-off until")
    await row.locator("button[data-action=cancel]").click()
    await confirm(page)
    await expect(page.locator("#toasts")).to_contain_text(
        f"message {message_id} cancelled", timeout=WAIT_MS
    )
    # Ended (issue 25): gone from the table, still readable with its history.
    await expect(row).to_have_count(0, timeout=WAIT_MS)
    ended = (await client.get(f"/queues/jobs/messages/{message_id}")).json()
    assert (ended["status"], ended["last_error"]) == ("ended", "cancelled")


@in_browser
async def test_the_history_button_draws_the_timeline_and_waiting_is_shown(
    server: BrokerServer, page: Page, client: httpx.AsyncClient
) -> None:
    """A nacked message's row says why it waits; History draws its events in order."""
    from playwright.async_api import expect

    assert (await client.post("/queues", json={"name": "jobs"})).status_code == 201
    published = await client.post("/queues/jobs/messages", json={"content": "x"})
    message_id = published.json()["message_id"]
    await client.get("/queues/jobs/messages/consume")
    nacked = await client.post(f"/messages/{message_id}/nack", params={"reason": "boom"})
    assert nacked.status_code == 200
    await sign_in(page, server, hash="#/queues/jobs")
    row = page.locator(f'#messages-table tr[data-message="{message_id}"]')
    await expect(row.locator("td.notes")).to_contain_text("waiting: no_consumer", timeout=WAIT_MS)
    await row.locator("button[data-action=history]").click()
    timeline = page.locator(f'tr[data-timeline-of="{message_id}"] ol.timeline li .badge')
    await expect(timeline).to_have_text(["published", "delivered", "nacked"], timeout=WAIT_MS)
