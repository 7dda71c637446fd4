"""A real Chromium (Debian's `chromium`, driven by Playwright) against a real `abacus serve`.

`.ci/run` installs the browser with apt-get; Playwright's own browser downloads are never used.
Outside CI a machine without chromium skips these tests; in CI a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.live_serve import LiveServe

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """One Chromium per test module. Not per session: Playwright's sync API keeps its event loop
    set as running on the main thread while it is started, and a later test's asyncio.run()
    would then refuse to start."""
    if not Path(CHROMIUM).exists():
        message = "Debian's chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # --no-sandbox: CI and these machines run as root, where Chromium's sandbox cannot start.
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def live_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServe]:
    serve = LiveServe(tmp_path_factory.mktemp("serve") / "data")
    yield serve
    assert serve.stop() == 0


def block_external_hosts(context) -> list[str]:  # type: ignore[no-untyped-def]
    """Abort every request to a host other than loopback; the returned list collects their URLs,
    so a test can assert that a page needed nothing from outside this machine."""
    blocked: list[str] = []

    def route(route) -> None:  # type: ignore[no-untyped-def]
        url = route.request.url
        host = urlsplit(url).hostname or ""
        if url.startswith(("data:", "blob:", "about:")) or host in LOOPBACK_HOSTS:
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    context.route("**/*", route)
    return blocked
