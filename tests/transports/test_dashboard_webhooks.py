"""The dashboard's Webhooks tab in Chromium: state, counters, recent attempts, pause/resume."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tests.transports.test_dashboard import WAIT_MS, chromium, context, in_browser, page, sign_in
from tests.transports.webhooks.receiver import Receiver, Reply

if TYPE_CHECKING:
    import httpx
    from playwright.async_api import Page

    from tests.conftest import BrokerServer

__all__ = ["chromium", "context", "page"]


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"webhook_allowed_hosts": ("127.0.0.1",)}


@in_browser
async def test_webhooks_tab_shows_state_and_pauses(
    server: BrokerServer, page: Page, client: httpx.AsyncClient
) -> None:
    """A failing webhook shows its last error and attempts; Pause pauses it as REST sees it."""
    from playwright.async_api import expect

    receiver = Receiver(lambda request: Reply(status=503))
    await receiver.start()
    try:
        assert (await client.post("/queues", json={"name": "jobs"})).status_code == 201
        response = await client.post("/queues/jobs/webhooks", json={"url": receiver.url})
        hook = response.json()
        assert (await client.post("/queues/jobs/messages", json={"content": 1})).status_code == 201
        await sign_in(page, server, hash="#/webhooks")
        row = page.locator(f'tr[data-webhook="{hook["id"]}"]')
        await expect(row.locator("td.last-error")).to_have_text("HTTP 503", timeout=WAIT_MS)
        await expect(row.locator("td.recent")).to_contain_text("503", timeout=WAIT_MS)
        await expect(row.locator("td.state")).to_have_text("active")
        button = row.locator("button[data-action=toggle]")
        await button.click()
        await expect(row.locator("td.state")).to_have_text("paused", timeout=WAIT_MS)
        [listed] = (await client.get("/queues/jobs/webhooks")).json()
        assert listed["state"] == "paused"
        await expect(button).to_have_text("Resume")
        await button.click()
        await expect(row.locator("td.state")).to_have_text("active", timeout=WAIT_MS)
    finally:
        await receiver.stop()
