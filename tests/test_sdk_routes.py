"""Ingest's routes for pages, in `abacus serve` over HTTP against Valkey and chDB: the SDK file and
its versioned URL, server-side assignments, the server-set visitor cookie, and hash_seed."""

from __future__ import annotations

import gzip
import re

import pytest

from ingest.assignment import assign
from shared.registry.models import Experiment
from tests.conftest import REPO
from tests.helpers import auth, serve_client

SDK_SOURCE = (REPO / "sdk" / "abacus.js").read_bytes()
SDK_BUDGET_BYTES = 5 * 1024
ASSIGNMENTS = "/api/experiments/assignments"


@pytest.fixture()
def client(settings):
    with serve_client(settings) as test_client:
        yield test_client


def registry_experiment(client, key: str) -> Experiment:
    """The definition as pages see it (GET /api/experiments), for the Python functions."""
    import msgspec

    public = next(e for e in client.get("/api/experiments").json() if e["experiment_key"] == key)
    stored = public | {"version": 1, "updated_at": "2026-01-01T00:00:00Z", "updated_by": "test"}
    return msgspec.convert(stored, Experiment)


def test_sdk_is_served_gzipped_within_its_budget(client):
    answer = client.get("/sdk/abacus.js", headers={"accept-encoding": "gzip"})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/javascript; charset=utf-8"
    assert answer.headers["content-encoding"] == "gzip"
    assert answer.headers["cache-control"] == "public, max-age=300"
    assert answer.headers["vary"] == "Accept-Encoding"
    assert answer.content == SDK_SOURCE  # httpx undid the gzip
    assert int(answer.headers["content-length"]) == len(gzip.compress(SDK_SOURCE, 9, mtime=0)) <= SDK_BUDGET_BYTES


def test_sdk_without_gzip_and_conditional_requests(client):
    plain = client.get("/sdk/abacus.js", headers={"accept-encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == SDK_SOURCE
    refused = client.get("/sdk/abacus.js", headers={"accept-encoding": "gzip;q=0, identity"})
    assert "content-encoding" not in refused.headers
    again = client.get("/sdk/abacus.js", headers={"if-none-match": plain.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


def test_versioned_url_is_named_by_the_content_and_cached_for_a_year(client):
    link = client.get("/sdk/abacus.js").headers["link"]
    versioned = re.fullmatch(r'<(/sdk/abacus\.[0-9a-f]{12}\.js)>; rel="canonical"', link)
    assert versioned is not None
    import hashlib

    assert versioned.group(1) == f"/sdk/abacus.{hashlib.sha256(SDK_SOURCE).hexdigest()[:12]}.js"
    answer = client.get(versioned.group(1))
    assert answer.status_code == 200 and answer.content == SDK_SOURCE
    assert answer.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert client.get("/sdk/abacus.000000000000.js").status_code == 404
    assert client.get("/sdk/other.js").status_code == 404


def test_server_side_assignments_come_from_the_same_functions(client):
    hero = registry_experiment(client, "homepage_hero_test")
    pricing = registry_experiment(client, "pricing_cta_test")
    for visitor in ("v1", "v2", "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "visitor-1", "s1"):
        home = client.get(ASSIGNMENTS, params={"visitor_id": visitor, "path": "/"})
        assert home.status_code == 200, home.text
        assert home.json() == {"homepage_hero_test": assign(hero, visitor)}
        assert home.headers["cache-control"] == "no-store"
        priced = client.get(ASSIGNMENTS, params={"visitor_id": visitor, "path": "/our-pricing/"}).json()
        assert priced == {"pricing_cta_test": assign(pricing, visitor)}
    assert client.get(ASSIGNMENTS, params={"visitor_id": "v1", "path": "/elsewhere"}).json() == {}


def test_server_side_assignments_honour_variant_cookies(client):
    hashed = client.get(ASSIGNMENTS, params={"visitor_id": "v1", "path": "/"}).json()["homepage_hero_test"]
    other = "tiny_gang_social_proof" if hashed == "control" else "control"
    client.cookies.set("exp_homepage_hero", other)
    assert client.get(ASSIGNMENTS, params={"visitor_id": "v1", "path": "/"}).json() == {"homepage_hero_test": other}
    client.cookies.set("exp_homepage_hero", "removed_variant")
    assert client.get(ASSIGNMENTS, params={"visitor_id": "v1", "path": "/"}).json() == {"homepage_hero_test": hashed}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"path": "/"}, "visitor_id"),
        ({"visitor_id": "v1"}, "path"),
        ({"visitor_id": "bad id!", "path": "/"}, "visitor_id"),
        ({"visitor_id": "x" * 129, "path": "/"}, "visitor_id"),
        ({"visitor_id": "v1", "path": "no-slash"}, "path"),
    ],
)
def test_bad_assignment_queries_are_400_naming_the_field(client, params, field):
    answer = client.get(ASSIGNMENTS, params=params)
    assert answer.status_code == 400
    assert answer.json()["ok"] is False and answer.json()["field"] == field


def test_kill_switch_and_disabled_experiments_assign_nothing(client, settings):
    admin = auth(settings)
    hero = client.get("/api/admin/experiments/homepage_hero_test", headers=admin).json()
    fields = {k: hero[k] for k in ("name", "description", "cookie_name", "eligible_routes", "variants")}
    assert (
        client.put("/api/admin/experiments/homepage_hero_test", json=fields | {"enabled": False}, headers=admin).status_code
        == 200
    )
    assert client.get(ASSIGNMENTS, params={"visitor_id": "v1", "path": "/"}).json() == {}
    assert (
        client.put("/api/admin/experiments/homepage_hero_test", json=fields | {"enabled": True}, headers=admin).status_code == 200
    )
    assert client.put("/api/admin/settings", json={"experiments_enabled": False}, headers=admin).status_code == 200
    assert client.get(ASSIGNMENTS, params={"visitor_id": "v1", "path": "/"}).json() == {}
    assert client.get(ASSIGNMENTS, params={"visitor_id": "v1", "path": "/our-pricing"}).json() == {}


def test_hash_seed_is_optional_stored_published_and_used(client, settings):
    admin = auth(settings)
    new = {
        "experiment_key": "seeded_test",
        "name": "Seeded",
        "cookie_name": "exp_seeded",
        "eligible_routes": ["/seeded"],
        "hash_seed": "homepage_hero_test",
        "variants": [
            {"variant_key": "control", "label": "A", "allocation": 50, "is_control": True},
            {"variant_key": "tiny_gang_social_proof", "label": "B", "allocation": 50},
        ],
    }
    created = client.post("/api/admin/experiments", json=new, headers=admin)
    assert created.status_code == 201, created.text
    assert created.json()["hash_seed"] == "homepage_hero_test"
    public = {e["experiment_key"]: e for e in client.get("/api/experiments").json()}
    assert public["seeded_test"]["hash_seed"] == "homepage_hero_test"
    assert "hash_seed" not in public["homepage_hero_test"]  # definitions without one are unchanged
    history = client.get("/api/admin/experiments/seeded_test/history", headers=admin).json()
    assert history[0]["definition"]["hash_seed"] == "homepage_hero_test"
    for visitor in (f"v{i}" for i in range(20)):
        same_seed = client.get(ASSIGNMENTS, params={"visitor_id": visitor, "path": "/"}).json()["homepage_hero_test"]
        assert client.get(ASSIGNMENTS, params={"visitor_id": visitor, "path": "/seeded"}).json() == {"seeded_test": same_seed}
    assert (
        client.post(
            "/api/admin/experiments", json=new | {"experiment_key": "empty_seed", "hash_seed": ""}, headers=admin
        ).status_code
        == 400
    )


def test_visitor_cookie_is_set_by_the_server_for_400_days(client):
    answer = client.post(
        "/api/experiments/visitor",
        content=b'{"visitor_id": "0f1e2d3c4b5a69788796a5b4c3d2e1f0"}',
        headers={"content-type": "text/plain"},
    )
    assert answer.status_code == 204, answer.text
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("abacus_id=0f1e2d3c4b5a69788796a5b4c3d2e1f0;")
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert "Max-Age=34560000" in cookie and "Path=/" in cookie and "SameSite=lax" in cookie
    assert "secure" not in attributes and "httponly" not in attributes and "domain" not in attributes
    secure = client.post(
        "/api/experiments/visitor",
        json={"visitor_id": "v1", "domain": "example.com"},
        headers={"origin": "https://www.example.com"},
    )
    assert secure.status_code == 204
    assert "Secure" in secure.headers["set-cookie"] and "Domain=example.com" in secure.headers["set-cookie"]


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b'{"visitor_id": "bad id"}', "text/plain", 400),
        (b'{"visitor_id": "v1", "domain": "bad domain;x=y"}', "text/plain", 400),
        (b'{"domain": "example.com"}', "application/json", 400),
        (b"not json", "text/plain", 400),
        (b'{"visitor_id": "v1"}', "application/xml", 415),
        (b'{"visitor_id": "v1", "pad": "' + b"x" * 2000 + b'"}', "text/plain", 413),
    ],
)
def test_bad_visitor_cookie_requests_set_nothing(client, body, content_type, status):
    answer = client.post("/api/experiments/visitor", content=body, headers={"content-type": content_type})
    assert answer.status_code == status
    assert "set-cookie" not in answer.headers


def test_retry_after_is_exposed_to_pages_on_allowed_origins(client, redis_client):
    answer = client.post("/api/experiments/batch", json=[], headers={"origin": "https://site.example"})
    exposed = {name.strip() for name in answer.headers["access-control-expose-headers"].split(",")}
    assert "retry-after" in exposed


def test_serve_documents_every_page_route(client):
    paths = client.get("/schema/openapi.json").json()["paths"]
    for path in ("/sdk/abacus.js", "/sdk/{name}", ASSIGNMENTS, "/api/experiments/visitor", "/api/experiments"):
        assert path in paths, path


def test_abacus_ingest_alone_serves_the_sdk_the_registry_and_assignments(redis_url):
    """`abacus ingest` as a process (RSGI, these GETs answered by its one edge): everything the SDK
    needs is on the ingest origin, the registry included, in the query API's shape."""
    import os
    import subprocess
    import sys
    import time

    import httpx
    import msgspec
    import redis

    from bench.common import free_port, publish_seed_registry
    from shared import redis_keys
    from shared.registry.models import RegistrySnapshot

    url = redis_url  # the tests' own database: the process lives only within this test
    redis.Redis.from_url(url).flushdb()
    publish_seed_registry(url)
    snapshot = msgspec.json.decode(redis.Redis.from_url(url).get(redis_keys.REGISTRY_SNAPSHOT), type=RegistrySnapshot)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABACUS_")}
    env |= {"ABACUS_REDIS_URL": url, "ABACUS_REGISTRY_POLL_MS": "100"}
    process = subprocess.Popen(
        [sys.executable, "-m", "abacus.cli", "ingest", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, "abacus ingest did not become ready"
            time.sleep(0.1)
        sdk = httpx.get(f"{base}/sdk/abacus.js", headers={"accept-encoding": "gzip"})
        assert sdk.status_code == 200 and sdk.headers["content-encoding"] == "gzip" and sdk.content == SDK_SOURCE
        registry = httpx.get(f"{base}/api/experiments")
        assert registry.status_code == 200
        assert registry.json() == msgspec.to_builtins([e.public() for e in snapshot.active()])
        assert registry.headers["etag"] == f'"g{snapshot.generation}"'
        assert httpx.get(f"{base}/api/experiments", headers={"if-none-match": registry.headers["etag"]}).status_code == 304
        hero = snapshot.find("homepage_hero_test")
        chosen = httpx.get(f"{base}{ASSIGNMENTS}", params={"visitor_id": "v7", "path": "/"})
        assert chosen.json() == {"homepage_hero_test": assign(hero, "v7")}
        cookie = httpx.post(
            f"{base}/api/experiments/visitor", content=b'{"visitor_id": "v7"}', headers={"content-type": "text/plain"}
        )
        assert cookie.status_code == 204 and cookie.headers["set-cookie"].startswith("abacus_id=v7;")
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0].decode()
        redis.Redis.from_url(url).flushdb()
    assert process.returncode == 0, output
