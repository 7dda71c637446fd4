"""The /schema docs page renders in Chromium with every request beyond loopback blocked: Swagger
UI's files come from the app itself, and the test fails on any request to another host."""

from __future__ import annotations

import pytest

from tests.browser.conftest import block_external_hosts


@pytest.mark.parametrize("path", ["/schema", "/schema/swagger"])
def test_docs_page_renders_with_no_network_beyond_loopback(browser, live_serve, path):
    context = browser.new_context()
    try:
        blocked = block_external_hosts(context)
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        response = page.goto(f"{live_serve.base_url}{path}")
        assert response is not None and response.status == 200
        page.locator(".swagger-ui .info .title").wait_for()
        assert "Abacus" in page.locator(".swagger-ui .info .title").inner_text()
        # Operations are listed, the SQL one among them, and one opens by keyboard.
        operation = page.locator(".opblock-summary-path", has_text="/api/v1/sql").first
        operation.wait_for()
        page.locator(".opblock-summary-control").first.focus()
        page.keyboard.press("Enter")
        page.locator(".opblock-body").first.wait_for()
        page.wait_for_load_state("networkidle")
        assert blocked == [], f"the docs page asked other hosts for {blocked}"
        assert errors == []
    finally:
        context.close()
