"""The dashboard's topics view in Chromium: bindings shown, bind, test routing, unbind."""

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

__all__ = ["chromium", "context", "page"]  # the fixtures, imported for pytest


@in_browser
async def test_topics_view_binds_tests_routing_and_unbinds(
    server: BrokerServer, page: Page, client: httpx.AsyncClient
) -> None:
    """A topic made over REST shows its binding; the page binds, tests a key, and unbinds."""
    from playwright.async_api import expect

    for queue in ("eu", "all"):
        assert (await client.post("/queues", json={"name": queue})).status_code == 201
    assert (await client.post("/topics", json={"name": "orders"})).status_code == 201
    bound = await client.post("/topics/orders/bindings", json={"queue": "eu", "pattern": "*.eu"})
    assert bound.status_code == 201
    await sign_in(page, server, hash="#/topics")
    rows = page.locator('#topics-table tr.binding-row[data-topic="orders"]')
    await expect(rows).to_have_count(1, timeout=WAIT_MS)
    await expect(rows.first.locator("code")).to_have_text("*.eu")

    await page.click("#bind-topic summary")
    await page.select_option("#bind-topic-form select[name=topic]", "orders")
    await page.fill("#bind-topic-form input[name=queue]", "all")
    await page.fill("#bind-topic-form input[name=pattern]", "#")
    await page.click("#bind-topic-form button[type=submit]")
    await expect(rows).to_have_count(2, timeout=WAIT_MS)

    await page.fill("#route-form input[name=routing_key]", "orders.eu")
    await page.click("#route-form button[type=submit]")
    await expect(page.locator("#route-result strong")).to_have_text(["all", "eu"], timeout=WAIT_MS)
    await page.fill("#route-form input[name=routing_key]", "")
    await page.click("#route-form button[type=submit]")
    await expect(page.locator("#route-result strong")).to_have_text(["all"], timeout=WAIT_MS)

    await page.locator('tr.binding-row[data-queue="eu"] button').click()
    await confirm(page)
    await expect(rows).to_have_count(1, timeout=WAIT_MS)
    bindings = (await client.get("/topics/orders")).json()["bindings"]
    assert [b["queue"] for b in bindings] == ["all"]

    # The queue's own view says which topics route to it.
    await page.goto(f"{server.url}/dashboard/#/queues/all")
    await expect(page.locator("#detail-topics")).to_have_text(
        "bound by orders (#)", timeout=WAIT_MS
    )
