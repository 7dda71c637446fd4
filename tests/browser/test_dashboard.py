"""The dashboard in a real Chromium against a real `abacus serve` with data: it renders the keys,
counts and bars (checked in the DOM and in a screenshot), an admin edits a definition and sees a
validation error next to the field and then the saved version, and an analyst cannot edit."""

from __future__ import annotations

import random
import re
import struct
import zlib
from pathlib import Path

import httpx
import pytest

from tests.conftest import wait_for
from tests.helpers import BROWSER_UA

SCREENSHOTS = Path(__file__).resolve().parent.parent.parent / ".screenshots"
KEY = "homepage_hero_test"


@pytest.fixture(scope="module")
def served(live_serve):
    """300 sessions split over both variants, a few percent converting, through ingest's batch endpoint."""
    rng = random.Random(7)
    beacons = []
    for index in range(300):
        variant = "control" if index % 2 == 0 else "tiny_gang_social_proof"
        session = f"browser_session_{index}"
        beacons.append(
            {"experiment_key": KEY, "variant_key": variant, "session_id": session, "path": "/", "event_name": "impression"}
        )
        if rng.random() < (0.08 if variant == "control" else 0.16):
            beacons.append(
                {
                    "experiment_key": KEY,
                    "variant_key": variant,
                    "session_id": session,
                    "path": "/",
                    "event_name": "conversion",
                    "value": 10,
                }
            )
    with httpx.Client(base_url=live_serve.base_url, headers={"User-Agent": BROWSER_UA}, timeout=30) as client:
        for start in range(0, len(beacons), 400):
            answer = client.post("/api/experiments/batch", json=beacons[start : start + 400])
            assert answer.status_code == 202 and answer.json()["rejected"] == 0, answer.text
        headers = {"Authorization": f"Bearer {live_serve.token('analyst')}"}

        def counted() -> bool:
            body = client.get(f"/api/v1/experiments/results?experiment_key={KEY}", headers=headers).json()[0]
            return sum(v["impressions"] for v in body["variants"]) == 300

        wait_for(counted, timeout=60)
    return live_serve


def sign_in(page, serve, role: str):  # type: ignore[no-untyped-def]
    response = page.goto(f"{serve.base_url}/ui/")
    token = page.get_by_label("Access token")
    token.fill(serve.token(role))
    token.press("Enter")  # keyboard only
    page.get_by_role("heading", name="Experiments", level=1).wait_for()
    return response


def open_experiment(page) -> None:
    link = page.get_by_role("link", name=KEY)
    link.focus()
    page.keyboard.press("Enter")
    page.locator("svg[data-chart=lift] rect.interval").first.wait_for()


def png_colours(png: bytes) -> int:
    """How many distinct pixel values the (8-bit RGB/RGBA, unfiltered-by-us) PNG holds."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    position, idat, width = 8, b"", 0
    channels = 4
    while position < len(png):
        length, kind = struct.unpack(">I4s", png[position : position + 8])
        data = png[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            width, _, depth, colour = struct.unpack(">IIBB", data[:10])
            assert depth == 8
            channels = {2: 3, 6: 4}[colour]
        elif kind == b"IDAT":
            idat += data
        position += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels + 1
    rows, previous = [], bytearray(stride - 1)
    for start in range(0, len(raw), stride):
        kind, line = raw[start], bytearray(raw[start + 1 : start + stride])
        for i in range(len(line)):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            up_left = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - up_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else up_left)) & 255
        rows.append(bytes(line))
        previous = line
    return len({row[i : i + channels] for row in rows[::4] for i in range(0, len(row), channels * 4)})


def test_dashboard_renders_keys_counts_and_bars(browser, served):
    context = browser.new_context(viewport={"width": 1200, "height": 1800})
    try:
        from tests.browser.conftest import block_external_hosts

        blocked = block_external_hosts(context)
        page = context.new_page()
        problems = []
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        response = sign_in(page, served, "analyst")
        # Nothing but this origin may be loaded or run (the console would report a violation).
        assert response.headers["content-security-policy"].startswith("default-src 'self'")
        assert "token" not in page.url and page.evaluate("sessionStorage.getItem('abacus.token')").count(".") == 2
        assert page.get_by_role("link", name=KEY).is_visible()
        assert page.get_by_role("link", name="pricing_cta_test").is_visible()
        SCREENSHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "dashboard-list.png"))
        open_experiment(page)
        page.locator("svg[data-chart=timeseries] .band").first.wait_for()
        counts = page.get_by_role("table").first
        assert counts.get_by_role("rowheader", name="control").is_visible()
        rows = counts.locator("tbody tr")
        assert rows.count() == 2
        impressions = sum(int(rows.nth(i).locator("td").nth(0).inner_text().replace(",", "")) for i in range(2))
        assert impressions == 300
        bar = page.locator("svg[data-chart=lift] rect.interval").first
        box = bar.bounding_box()
        assert box is not None and box["width"] > 5 and box["height"] > 5
        shot = page.screenshot(path=str(SCREENSHOTS / "dashboard-experiment.png"), full_page=True)
        assert png_colours(shot) > 20  # not a blank page
        assert png_colours(bar.screenshot()) > 1  # the bar is drawn, not an empty box
        assert page.get_by_text(KEY).first.is_visible()
        # The chart is labelled for screen readers with the numbers it draws.
        assert "tiny_gang_social_proof" in page.locator("svg[data-chart=lift] desc").text_content()
        assert blocked == [] and problems == []
    finally:
        context.close()


def test_admin_sees_a_validation_error_next_to_the_field_then_the_saved_version(browser, served):
    context = browser.new_context()
    try:
        page = context.new_page()
        sign_in(page, served, "admin")
        open_experiment(page)
        cookie = page.get_by_label("Cookie name")
        before = page.get_by_role("heading", name="Definition (version", exact=False).inner_text()
        cookie.fill("has space")
        page.get_by_role("button", name="Save", exact=True).click()
        error = page.locator('[data-error-for="$.cookie_name"]')
        error.wait_for()
        wait_for(lambda: "Expected `str` matching regex" in error.inner_text(), timeout=10)
        assert cookie.get_attribute("aria-invalid") == "true"
        assert page.evaluate("document.activeElement.dataset.path") == "$.cookie_name"
        cookie.fill("exp_homepage_hero")
        page.get_by_label("Description").fill("Edited in the dashboard")
        page.get_by_role("button", name="Save", exact=True).click()
        saved = page.locator("#save-outcome", has_text="Saved version")
        saved.wait_for()
        after = page.get_by_role("heading", name="Definition (version", exact=False).inner_text()
        version = int(saved.inner_text().split()[-1].rstrip("."))
        assert after == f"Definition (version {version})" and after != before
        history = page.locator("section", has=page.get_by_role("heading", name="Definition history"))
        assert (
            "Edited in the dashboard" in history.locator("ins").first.inner_text()
            or "Edited in the dashboard" in history.inner_text()
        )
        page.screenshot(path=str(SCREENSHOTS / "dashboard-admin-saved.png"), full_page=True)
    finally:
        context.close()


def test_analyst_cannot_edit(browser, served):
    context = browser.new_context()
    try:
        page = context.new_page()
        sign_in(page, served, "analyst")
        assert page.get_by_role("button", name="Turn all experiments off").count() == 0
        open_experiment(page)
        assert page.locator("main input, main textarea").count() == 0
        for name in ("Save", "Archive", "Restore"):
            assert page.get_by_role("button", name=name, exact=True).count() == 0
        assert page.get_by_text("Read-only: only admins change definitions.").is_visible()
        # The API itself refuses the analyst, whatever a page sends.
        status = page.evaluate(
            """async (key) => (await fetch(`/api/admin/experiments/${key}`, {method: "DELETE",
                 headers: {Authorization: `Bearer ${sessionStorage.getItem("abacus.token")}`}})).status""",
            KEY,
        )
        assert status == 403
        assert "token" not in page.url
    finally:
        context.close()


def test_admin_archives_restores_and_flips_the_kill_switch(browser, served):
    context = browser.new_context()
    try:
        page = context.new_page()
        sign_in(page, served, "admin")
        page.get_by_role("link", name="pricing_cta_test").click()
        page.get_by_role("button", name="Archive", exact=True).click()
        page.get_by_role("button", name="Restore", exact=True).wait_for()
        assert page.locator("h1 .status").inner_text() == "archived"
        page.get_by_role("button", name="Restore", exact=True).click()
        page.get_by_role("button", name="Archive", exact=True).wait_for()
        assert page.locator("h1 .status").inner_text() == "running"
        history = page.locator("section", has=page.get_by_role("heading", name="Definition history")).inner_text()
        assert "restore by tester@example.com" in history and "archive by tester@example.com" in history

        page.get_by_role("link", name="Experiments", exact=True).click()
        page.get_by_role("button", name="Turn all experiments off").click()
        page.get_by_role("button", name="Turn experiments back on").wait_for()
        assert httpx.get(f"{served.base_url}/api/experiments").json() == []
        row = page.get_by_role("row", name=re.compile("pricing_cta_test"))
        assert row.locator(".status").inner_text() == "paused (kill switch)"  # enabled, yet not running
        page.get_by_role("button", name="Turn experiments back on").click()
        page.get_by_role("button", name="Turn all experiments off").wait_for()
        assert len(httpx.get(f"{served.base_url}/api/experiments").json()) == 2
        assert page.get_by_role("row", name=re.compile("pricing_cta_test")).locator(".status").inner_text() == "running"
    finally:
        context.close()


def test_admin_edits_the_analysis_settings(browser, served):
    context = browser.new_context()
    try:
        page = context.new_page()
        sign_in(page, served, "admin")
        open_experiment(page)
        planned = page.get_by_label("Planned sessions")
        assert planned.input_value() == "" and page.get_by_label("Primary metric").input_value() == "conversion"
        assert page.get_by_label("Guardrail metrics").input_value() == "value_per_session"
        planned.fill("1")
        page.get_by_role("button", name="Save", exact=True).click()
        error = page.locator('[data-error-for="$.planned_sessions"]')
        wait_for(lambda: ">= 2" in error.inner_text(), timeout=10)
        assert planned.get_attribute("aria-invalid") == "true"
        planned.fill("40000")
        page.get_by_label("Guardrail metrics").fill("value_per_session, form_submit/form_start")
        page.get_by_label("Value cap percentile").fill("99")
        page.get_by_role("button", name="Save", exact=True).click()
        page.locator("#save-outcome", has_text="Saved version").wait_for()
        # The page is rebuilt from the saved definition.
        wait_for(lambda: page.get_by_label("Planned sessions").input_value() == "40000", timeout=10)
        assert page.get_by_label("Guardrail metrics").input_value() == "value_per_session, form_submit/form_start"
        assert page.get_by_label("Value cap percentile").input_value() == "99"
        assert page.get_by_label("Target minimum detectable effect").input_value() == ""
        phases = page.locator("section", has=page.get_by_role("heading", name="Allocation phases"))
        assert "(analysed)" in phases.inner_text()
        # The phase's start as a reader scans it (minutes, UTC), not the API's raw ISO instant.
        start = phases.locator("tbody tr td").first.inner_text()
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", start), start
    finally:
        context.close()
