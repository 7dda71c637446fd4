"""The browser harness itself: Chromium loads a page from a real `abacus serve`, and a request to
any host beyond loopback is blocked and recorded rather than sent."""

from __future__ import annotations

from tests.browser.conftest import block_external_hosts


def test_chromium_reads_serve_health_and_external_hosts_are_blocked(browser, live_serve):
    context = browser.new_context()
    try:
        blocked = block_external_hosts(context)
        page = context.new_page()
        response = page.goto(f"{live_serve.base_url}/healthz")
        assert response is not None and response.status == 200
        assert "ok" in page.content()
        failed = page.evaluate("fetch('https://cdn.example.invalid/x.js').then(() => 'sent', () => 'refused')")
        assert failed == "refused"
        assert blocked == ["https://cdn.example.invalid/x.js"]
    finally:
        context.close()
