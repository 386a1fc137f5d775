"""The dashboard's group bits in Chromium: the largest groups' backlog, a message held by its
group."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.transports.test_dashboard import WAIT_MS, chromium, context, in_browser, page, sign_in

if TYPE_CHECKING:
    import httpx
    from playwright.async_api import Page

    from tests.conftest import BrokerServer

__all__ = ["chromium", "context", "page"]


@in_browser
async def test_group_backlog_and_a_held_message(
    server: BrokerServer, page: Page, client: httpx.AsyncClient
) -> None:
    """The queue table lists the largest groups; a message behind its group says so."""
    from playwright.async_api import expect

    assert (await client.post("/queues", json={"name": "jobs"})).status_code == 201
    messages = [{"content": n, "group": "big"} for n in range(7)]
    messages += [{"content": n, "group": "small"} for n in range(2)]
    response = await client.post("/queues/jobs/messages/batch", json={"messages": messages})
    ids = [m["message_id"] for m in response.json()["messages"]]
    info = (await client.get("/queues/jobs")).json()
    assert (info["groups"], info["largest_groups"]) == (2, {"big": 7, "small": 2})
    await sign_in(page, server, hash="#/queues")
    row = page.locator('tr[data-queue="jobs"]')
    await expect(row.locator("td.opts")).to_contain_text(
        "2 groups (big: 7, small: 2)", timeout=WAIT_MS
    )
    await page.evaluate("location.hash = '#/queues/jobs'")
    held = page.locator(f'#messages-table tr[data-message="{ids[1]}"]')
    await expect(held.locator("td.notes")).to_contain_text(
        f"group big · waits for its group (behind #{ids[0]})", timeout=WAIT_MS
    )
