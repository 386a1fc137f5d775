"""The API docs pages, Swagger UI and GraphiQL, rendered in Chromium with nothing from elsewhere.

Every request the browser makes is recorded: each must go to the broker on
127.0.0.1 (or be a ``data:`` URL). The chromium process and its contexts are
the dashboard tests' fixtures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.transports.test_dashboard import (  # the module's chromium, per-test contexts
    BROWSER_MARKS,
    WAIT_MS,
    chromium,
    context,
)

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext, Page, Request

    from tests.conftest import BrokerServer

__all__ = ["chromium", "context"]


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Development mode, where GraphiQL is served."""
    return {"dev": True}


async def recorded_page(context: BrowserContext) -> tuple[Page, list[str], list[Request]]:
    """A page that records every URL it asks for and every script error."""
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    urls: list[str] = []
    requests: list[Request] = []
    errors: list[str] = []

    def record(request: Request) -> None:
        urls.append(request.url)
        requests.append(request)

    page.on("request", record)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console",
        lambda message: (
            errors.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    page.errors = errors  # type: ignore[attr-defined]
    return page, urls, requests


def assert_all_local(urls: list[str], server: BrokerServer) -> None:
    assert urls, "the page made no request"
    elsewhere = [u for u in urls if not (u.startswith(server.url + "/") or u.startswith("data:"))]
    assert not elsewhere, elsewhere


async def test_docs_need_no_token_and_send_a_csp(server: BrokerServer) -> None:
    """The pages and their files are public; Swagger's page allows nothing but this origin."""
    async with httpx.AsyncClient(base_url=server.url) as http:
        for path in (
            "/schema/swagger",
            "/schema/assets/swagger-init.js",
            "/schema/assets/vendor/swagger-ui/swagger-ui-bundle.js",
            "/schema/assets/vendor/graphiql/graphiql.min.js",
            "/graphql",
        ):
            response = await http.get(path, headers={"accept": "text/html"})
            assert response.status_code == 200, path
        swagger = await http.get("/schema/swagger")
        assert "default-src 'self'" in swagger.headers["content-security-policy"]
        assert "cdn" not in swagger.text.lower() and "unpkg" not in swagger.text


@pytest.mark.parametrize("_", [None], ids=["swagger"])
async def test_swagger_ui_renders_offline_and_calls_with_the_pasted_token(
    _: None, server: BrokerServer, context: BrowserContext, admin_token: str
) -> None:
    """Swagger UI shows the operations; Authorize + Try it out answers 200 with the token."""
    from playwright.async_api import expect

    page, urls, requests = await recorded_page(context)
    await page.goto(f"{server.url}/schema/swagger")
    await expect(page.locator(".swagger-ui .info .title")).to_contain_text("wsbroker")
    await expect(page.locator(".opblock").first).to_be_visible()
    assert await page.locator(".opblock").count() > 20
    await page.locator("button.authorize").first.click()
    await page.locator(".modal-ux input[type=text], .modal-ux input[type=password]").first.fill(
        admin_token
    )
    await page.locator(".modal-ux button.authorize").click()
    await page.locator(".modal-ux button.btn-done").click()
    operation = page.locator("#operations-queues-QueuesListQueues")
    await operation.locator(".opblock-summary").click()
    await operation.locator("button.try-out__btn").click()
    await operation.locator("button.execute").click()
    await expect(
        operation.locator(".live-responses-table tbody .response-col_status").first
    ).to_have_text("200")
    sent = [r for r in requests if r.url == f"{server.url}/queues"]
    assert sent and (await sent[-1].all_headers())["authorization"] == f"Bearer {admin_token}"
    assert_all_local(urls, server)
    assert not page.errors, page.errors  # type: ignore[attr-defined]
    await page.close()


@pytest.mark.parametrize("_", [None], ids=["graphiql"])
async def test_graphiql_renders_offline_and_queries_with_the_pasted_token(
    _: None, server: BrokerServer, context: BrowserContext, admin_token: str
) -> None:
    """GraphiQL (development mode) loads from the broker alone; a query carries the token
    pasted in its Headers tab."""
    from playwright.async_api import expect

    page, urls, requests = await recorded_page(context)
    await page.goto(f"{server.url}/graphql")
    await expect(page.locator(".graphiql-container")).to_be_visible()
    await expect(page.get_by_text("PASTE-AN-ACCESS-TOKEN").first).to_be_attached()
    # The editors are CodeMirror 5 instances: typing into them is what setValue does.
    await page.evaluate(
        """(token) => {
          const editors = [...document.querySelectorAll('.CodeMirror')].map(e => e.CodeMirror);
          editors[0].setValue('{ queues { name } }');
          for (const editor of editors.slice(1)) {
            if (editor.getValue().includes('Authorization')) {
              editor.setValue(JSON.stringify({Authorization: 'Bearer ' + token}));
            }
          }
        }""",
        admin_token,
    )
    await page.locator(".graphiql-execute-button").click()
    await expect(page.locator(".graphiql-response")).to_contain_text('"queues": []')
    queries = [r for r in requests if r.url == f"{server.url}/graphql" and r.method == "POST"]
    assert (await queries[-1].all_headers())["authorization"] == f"Bearer {admin_token}"
    assert_all_local(urls, server)
    assert any(u.startswith(f"{server.url}/schema/assets/vendor/graphiql/") for u in urls)
    assert not page.errors, page.errors  # type: ignore[attr-defined]
    await page.close()


pytestmark = BROWSER_MARKS
