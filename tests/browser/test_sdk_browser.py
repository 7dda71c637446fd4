"""abacus.js in Debian's Chromium against a real `abacus serve`: the page is on one origin (a tiny
local server), ingest on another, as on a real site. Counts are read back from the results API,
so "exactly" means what an analyst would see."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator

import httpx
import msgspec
import pytest

from ingest.assignment import assign, hash
from shared.registry.models import Experiment
from tests.browser.conftest import CHROMIUM, block_external_hosts
from tests.browser.sdk_pages import SitePages
from tests.conftest import REPO
from tests.helpers import BROWSER_UA
from tests.live_serve import LiveServe

SDK_SOURCE = (REPO / "sdk" / "abacus.js").read_bytes()
COUNTED = ("impressions", "conversions", "conversion_value_total", "unique_sessions")


@pytest.fixture(scope="module")
def site() -> Iterator[SitePages]:
    pages = SitePages()
    yield pages
    pages.close()


@pytest.fixture(scope="module")
def serve(site: SitePages, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServe]:
    env = {"ABACUS_CORS_ORIGINS": site.origin, "ABACUS_REGISTRY_POLL_MS": "100", "ABACUS_ROLLUP_IDLE_MS": "50"}
    live = LiveServe(tmp_path_factory.mktemp("sdk-serve") / "data", env=env)
    site.serve_url = live.base_url
    yield live
    assert live.stop() == 0


class Admin:
    def __init__(self, serve: LiveServe) -> None:
        self.base = serve.base_url
        self.headers = {"Authorization": f"Bearer {serve.token('admin')}"}

    def create(self, key: str, enabled: bool = True) -> None:
        definition = {
            "experiment_key": key,
            "name": key,
            "cookie_name": f"exp_{key}",
            "enabled": enabled,
            "eligible_routes": [f"/e/{key}"],
            "variants": [
                {"variant_key": "control", "label": "A", "allocation": 50, "is_control": True},
                {"variant_key": "treatment", "label": "B", "allocation": 50},
            ],
        }
        answer = httpx.post(f"{self.base}/api/admin/experiments", json=definition, headers=self.headers)
        assert answer.status_code == 201, answer.text
        self.wait_for_registry(lambda keys: key in keys)

    def set_experiments_enabled(self, enabled: bool) -> None:
        answer = httpx.put(f"{self.base}/api/admin/settings", json={"experiments_enabled": enabled}, headers=self.headers)
        assert answer.status_code == 200, answer.text
        self.wait_for_registry(lambda keys: bool(keys) == enabled)

    def wait_for_registry(self, condition) -> None:  # type: ignore[no-untyped-def]
        wait(lambda: condition({e["experiment_key"] for e in httpx.get(f"{self.base}/api/experiments").json()}))

    def experiment(self, key: str) -> Experiment:
        public = next(e for e in httpx.get(f"{self.base}/api/experiments").json() if e["experiment_key"] == key)
        return msgspec.convert(public | {"version": 1, "updated_at": "2026-01-01T00:00:00Z", "updated_by": "t"}, Experiment)

    def counts(self, key: str) -> dict[str, dict[str, float]]:
        answer = httpx.get(f"{self.base}/api/v1/experiments/results", params={"experiment_key": key}, headers=self.headers)
        assert answer.status_code == 200, answer.text
        return {v["variant_key"]: {name: v[name] for name in COUNTED} for v in answer.json()[0]["variants"]}

    def wait_for_counts(self, key: str, expected: dict[str, dict[str, float]], settle_s: float = 2.0) -> None:
        """Until the results say ``expected``, and still say it ``settle_s`` later (nothing more arrives)."""
        wait(lambda: self.counts(key) == expected, timeout=40, describe=lambda: self.counts(key))
        time.sleep(settle_s)
        assert self.counts(key) == expected


def wait(condition, timeout: float = 20.0, describe=None) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout:.0f} s" + (f": {describe()}" if describe else ""))
        time.sleep(0.1)


def zero() -> dict[str, float]:
    return {"impressions": 0, "conversions": 0, "conversion_value_total": 0.0, "unique_sessions": 0}


@pytest.fixture(scope="module")
def admin(serve: LiveServe) -> Admin:
    return Admin(serve)


@pytest.fixture(scope="module")
def human_browser(browser):  # type: ignore[no-untyped-def]
    """Chromium with a desktop browser's User-Agent: headless Chromium says "HeadlessChrome", which
    ingest drops as a bot, and a context's override does not reach beacons sent as a page unloads."""
    launched = browser.browser_type.launch(executable_path=CHROMIUM, args=["--no-sandbox", f"--user-agent={BROWSER_UA}"])
    yield launched
    launched.close()


@pytest.fixture()
def context(human_browser):  # type: ignore[no-untyped-def]
    context = human_browser.new_context()
    blocked = block_external_hosts(context)
    yield context
    context.close()
    assert blocked == [], "the pages needed nothing beyond this machine"


def batch_requests(context) -> list:  # type: ignore[no-untyped-def]
    sent: list = []
    context.on("request", lambda request: sent.append(request) if request.url.endswith("/api/experiments/batch") else None)
    return sent


def open_page(context, url: str):  # type: ignore[no-untyped-def]
    page = context.new_page()
    page.goto(url)
    assert page.evaluate("window.abacusReady") is True
    return page


def visitor_cookies(context) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    return {c["name"]: c for c in context.cookies()}


def test_assignment_is_deterministic_across_reloads_and_equal_to_python(context, site, serve, admin):
    hero = admin.experiment("homepage_hero_test")
    page = open_page(context, f"{site.origin}/")
    visitor = page.evaluate("Abacus.visitorId()")
    variant = page.evaluate("Abacus.variant('homepage_hero_test')")
    assert len(visitor) == 32 and int(visitor, 16) >= 0
    assert variant == assign(hero, visitor)
    cookies = visitor_cookies(context)
    assert cookies["abacus_id"]["value"] == visitor and cookies["exp_homepage_hero"]["value"] == variant
    assert cookies["abacus_id"]["sameSite"] == "Lax" and not cookies["abacus_id"]["httpOnly"]
    assert abs(cookies["abacus_id"]["expires"] - (time.time() + 400 * 86400)) < 3600
    assert json.loads(page.evaluate("localStorage.getItem('abacus_id')")) == visitor
    for _ in range(2):
        page.reload()
        assert page.evaluate("window.abacusReady") is True
        assert page.evaluate("[Abacus.visitorId(), Abacus.variant('homepage_hero_test')]") == [visitor, variant]

    # The cookie gone, localStorage still has the id.
    context.clear_cookies()
    page.reload()
    assert page.evaluate("window.abacusReady.then(() => Abacus.visitorId())") == visitor

    # Other visitors, each on a fresh page: the browser's choice is Python's, both variants among them.
    chosen = set()
    for i in range(8):
        other = f"{i:032x}"
        context.clear_cookies()
        page.evaluate("localStorage.clear()")
        context.add_cookies([{"name": "abacus_id", "value": other, "url": site.origin}])
        page.reload()
        assert page.evaluate("window.abacusReady.then(() => Abacus.visitorId())") == other
        in_browser = page.evaluate("Abacus.variant('homepage_hero_test')")
        assert in_browser == assign(hero, other)
        assert page.is_visible(f"[data-abacus-variant={in_browser}]")
        chosen.add(in_browser)
    assert chosen == {"control", "tiny_gang_social_proof"}

    # Chromium's hash over many values equals Python's, astral characters included.
    values = [f"visitor-{i}" for i in range(300)] + ["caf\u00e9", "\U0001f600x", ""]
    assert page.evaluate("(values) => values.map((v) => Abacus.hash('homepage_hero_test', v, 2))", values) == [
        hash("homepage_hero_test", v, 2) for v in values
    ]


def test_variant_cookie_is_honoured_and_reassigned_when_invalid(context, site, admin):
    hero = admin.experiment("homepage_hero_test")
    visitor = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    hashed = assign(hero, visitor)
    other = "tiny_gang_social_proof" if hashed == "control" else "control"
    context.add_cookies(
        [
            {"name": "abacus_id", "value": visitor, "url": site.origin},
            {"name": "exp_homepage_hero", "value": other, "url": site.origin},
        ]
    )
    page = open_page(context, f"{site.origin}/")
    assert page.evaluate("Abacus.variant('homepage_hero_test')") == other
    assert page.is_visible(f"[data-abacus-variant={other}]") and not page.is_visible(f"[data-abacus-variant={hashed}]")

    context.add_cookies([{"name": "exp_homepage_hero", "value": "retired_variant", "url": site.origin}])
    page.reload()
    assert page.evaluate("window.abacusReady") is True
    assert page.evaluate("Abacus.variant('homepage_hero_test')") == hashed
    assert visitor_cookies(context)["exp_homepage_hero"]["value"] == hashed
    assert page.is_visible(f"[data-abacus-variant={hashed}]") and not page.is_visible(f"[data-abacus-variant={other}]")


def test_impressions_and_a_conversion_on_click_are_counted_exactly(context, site, admin):
    key = "browser_counts_test"
    admin.create(key)
    page = open_page(context, f"{site.origin}/e/{key}")
    variant = page.evaluate(f"Abacus.variant('{key}')")
    page.reload()  # a second page view: a second impression
    assert page.evaluate("window.abacusReady") is True
    assert page.evaluate(f"[Abacus.variant('{key}'), Abacus.variant('{key}')]") == [variant, variant]
    page.click("#buy")
    page.evaluate("Abacus.flush()")
    other = "treatment" if variant == "control" else "control"
    expected = {
        variant: {"impressions": 2, "conversions": 1, "conversion_value_total": 12.5, "unique_sessions": 1},
        other: zero(),
    }
    admin.wait_for_counts(key, dict(sorted(expected.items(), key=lambda item: item[0] != "control")))


# Chromium sends a beacon for an unloading page without telling Playwright about it, so the page's
# sendBeacon is wrapped (the real one still sends) to record what it carried, read back on /plain.
RECORD_BEACONS = """
const realSendBeacon = navigator.sendBeacon.bind(navigator);
navigator.sendBeacon = (url, body) => {
  const sent = realSendBeacon(url, body);
  const log = JSON.parse(localStorage.getItem("test_beacons") || "[]");
  log.push({url, sent, events: JSON.parse(body)});
  localStorage.setItem("test_beacons", JSON.stringify(log));
  return sent;
};
"""


def test_navigating_away_flushes_by_send_beacon(context, site, serve, admin):
    key = "browser_beacon_test"
    admin.create(key)
    context.add_init_script(RECORD_BEACONS)
    sent = batch_requests(context)
    page = open_page(context, f"{site.origin}/e/{key}")
    variant = page.evaluate(f"Abacus.variant('{key}')")
    page.evaluate("Abacus.flush()")  # the impression goes by fetch
    page.click("#buy-and-leave")  # the conversion is queued, and the page goes away before its send
    page.wait_for_url(f"{site.origin}/plain")  # a page without the SDK: nothing can send it later
    beacons = json.loads(page.evaluate("localStorage.getItem('test_beacons')"))
    assert [(b["url"], b["sent"]) for b in beacons] == [(f"{serve.base_url}/api/experiments/batch", True)]
    assert [e["event_name"] for e in beacons[0]["events"]] == ["conversion"]
    fetched = [e["event_name"] for r in sent if r.resource_type == "fetch" for e in json.loads(r.post_data)]
    assert fetched == ["impression"]
    other = "treatment" if variant == "control" else "control"
    expected = {
        variant: {"impressions": 1, "conversions": 1, "conversion_value_total": 5.0, "unique_sessions": 1},
        other: zero(),
    }
    admin.wait_for_counts(key, dict(sorted(expected.items(), key=lambda item: item[0] != "control")))


def test_kill_switch_and_a_disabled_experiment_send_nothing(context, site, admin):
    admin.create("browser_disabled_test", enabled=False)
    sent = batch_requests(context)
    page = open_page(context, f"{site.origin}/e/browser_disabled_test")
    assert page.evaluate("Abacus.variant('browser_disabled_test')") is None
    assert page.evaluate("Abacus.track('conversion', {experiment_key: 'browser_disabled_test'})") == 0
    assert page.is_visible("[data-abacus-variant=control]") and not page.is_visible("[data-abacus-variant=treatment]")

    admin.set_experiments_enabled(False)
    try:
        for path in ("/", "/e/browser_disabled_test"):
            kill = context.new_page()
            kill.goto(f"{site.origin}{path}")
            assert kill.evaluate("window.abacusReady") is True
            assert kill.evaluate("[Abacus.variant('homepage_hero_test'), Abacus.track('conversion')]") == [None, 0]
            assert kill.is_visible("[data-abacus-variant=control]")
            kill.click("#buy-and-leave")  # leaving would send by sendBeacon, if anything were queued
            kill.wait_for_url(f"{site.origin}/plain")
        page.evaluate("Abacus.flush()")
        page.goto(f"{site.origin}/plain")
        time.sleep(1.5)
        assert sent == []
    finally:
        admin.set_experiments_enabled(True)


def valkey_pid(serve: LiveServe) -> int:
    return int(json.loads((serve.data_dir / "valkey" / "abacus-valkey.json").read_text())["pid"])


def test_ingest_503_keeps_events_across_a_reload_and_retries_them_once_redis_is_back(context, site, serve, admin):
    key = "browser_outage_test"
    admin.create(key)
    statuses: list[int] = []
    context.on("response", lambda r: statuses.append(r.status) if r.url.endswith("/api/experiments/batch") else None)
    pid = valkey_pid(serve)
    os.kill(pid, signal.SIGSTOP)  # Redis stops answering: ingest answers 503 once its append times out
    try:
        page = open_page(context, f"{site.origin}/e/{key}")
        variant = page.evaluate(f"Abacus.variant('{key}')")
        page.click("#buy")
        page.evaluate("Abacus.flush()")
        wait(lambda: 503 in statuses, timeout=30, describe=lambda: statuses)
        assert sorted(e["event_name"] for e in json.loads(page.evaluate("localStorage.getItem('abacus_queue')"))) == [
            "conversion",
            "impression",
        ]
        page.reload()  # the queue outlives the page; this view adds its own impression
        assert page.evaluate("window.abacusReady") is True
        assert page.evaluate(f"Abacus.variant('{key}')") == variant
        queued = json.loads(page.evaluate("localStorage.getItem('abacus_queue')"))
        assert sorted(e["event_name"] for e in queued) == ["conversion", "impression", "impression"]
    finally:
        os.kill(pid, signal.SIGCONT)
    other = "treatment" if variant == "control" else "control"
    expected = {
        variant: {"impressions": 2, "conversions": 1, "conversion_value_total": 12.5, "unique_sessions": 1},
        other: zero(),
    }
    admin.wait_for_counts(key, dict(sorted(expected.items(), key=lambda item: item[0] != "control")), settle_s=3.0)
    wait(lambda: page.evaluate("localStorage.getItem('abacus_queue')") == "[]", describe=lambda: statuses)
    assert statuses.count(202) >= 1 and all(status in (202, 503) for status in statuses)


def test_sdk_transfer_is_within_its_5_kb_budget(context, site, serve):
    responses = []
    context.on("response", lambda r: responses.append(r) if r.url.endswith("/sdk/abacus.js") else None)
    page = open_page(context, f"{site.origin}/")
    assert responses and responses[0].headers["content-encoding"] == "gzip"
    sizes = page.evaluate(
        "performance.getEntriesByType('resource').filter((e) => e.name.endsWith('/sdk/abacus.js'))"
        ".map((e) => [e.encodedBodySize, e.decodedBodySize])[0]"
    )
    encoded, decoded = sizes
    assert decoded == len(SDK_SOURCE)
    assert 0 < encoded <= 5 * 1024, f"{encoded} bytes on the wire"
