"""Admin definitions, history, settings and validation over HTTP, against Valkey and chDB."""

from __future__ import annotations

import copy

import pytest

from tests.helpers import auth, serve_client

NEW = {
    "experiment_key": "checkout_copy_test",
    "name": "Checkout copy",
    "description": "Shorter copy on the checkout button",
    "cookie_name": "exp_checkout_copy",
    "enabled": True,
    "eligible_routes": ["/checkout"],
    "variants": [
        {"variant_key": "control", "label": "Original", "allocation": 34, "is_control": True},
        {"variant_key": "short", "label": "Short", "allocation": 33},
        {"variant_key": "shorter", "label": "Shorter", "allocation": 33},
    ],
}


@pytest.fixture()
def client(settings):
    with serve_client(settings) as test_client:
        yield test_client


@pytest.fixture()
def admin(settings):
    return auth(settings, "admin", "alice@example.com")


def fields_of(body: dict) -> dict:
    return {k: body[k] for k in ("name", "description", "cookie_name", "enabled", "eligible_routes", "variants")}


def test_create_get_list_and_conflict(client, admin):
    created = client.post("/api/admin/experiments", json=NEW, headers=admin)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["version"] == 1 and body["updated_by"] == "alice@example.com"
    assert created.headers["etag"] == '"1"'
    assert [v["variant_key"] for v in body["variants"]] == ["control", "short", "shorter"]
    assert client.post("/api/admin/experiments", json=NEW, headers=admin).status_code == 409
    listed = client.get("/api/admin/experiments", headers=admin).json()
    assert [e["experiment_key"] for e in listed] == ["checkout_copy_test", "homepage_hero_test", "pricing_cta_test"]
    assert all({"version", "updated_at", "updated_by"} <= set(e) for e in listed)
    public = client.get("/api/experiments").json()
    assert "checkout_copy_test" in [e["experiment_key"] for e in public]
    assert set(public[0]) == {"experiment_key", "name", "description", "cookie_name", "enabled", "eligible_routes", "variants"}


def test_update_keeps_history_with_who_and_when(client, settings):
    first, second = auth(settings, "admin", "alice"), auth(settings, "admin", "bob")
    assert client.post("/api/admin/experiments", json=NEW, headers=first).status_code == 201
    changed = fields_of(NEW) | {"description": "v2"}
    assert client.put("/api/admin/experiments/checkout_copy_test", json=changed, headers=second).json()["version"] == 2
    history = client.get("/api/admin/experiments/checkout_copy_test/history", headers=first).json()
    assert [(h["version"], h["action"], h["changed_by"]) for h in history] == [(1, "create", "alice"), (2, "update", "bob")]
    assert history[0]["definition"]["description"] == NEW["description"]
    assert history[1]["definition"]["description"] == "v2"
    assert history[0]["changed_at"] <= history[1]["changed_at"]


def test_delete_archives_and_keeps_history(client, admin):
    client.post("/api/admin/experiments", json=NEW, headers=admin)
    deleted = client.delete("/api/admin/experiments/checkout_copy_test", headers=admin)
    assert deleted.status_code == 200 and deleted.json()["archived"] is True
    assert client.get("/api/admin/experiments/checkout_copy_test", headers=admin).status_code == 404
    assert "checkout_copy_test" not in [e["experiment_key"] for e in client.get("/api/experiments").json()]
    assert "checkout_copy_test" not in [e["experiment_key"] for e in client.get("/api/admin/experiments", headers=admin).json()]
    archived = client.get("/api/admin/experiments?include_archived=true", headers=admin).json()
    assert any(e["experiment_key"] == "checkout_copy_test" and e["archived"] for e in archived)
    history = client.get("/api/admin/experiments/checkout_copy_test/history", headers=admin).json()
    assert [h["action"] for h in history] == ["create", "archive"]
    assert client.post("/api/admin/experiments", json=NEW, headers=admin).status_code == 409
    assert client.delete("/api/admin/experiments/checkout_copy_test", headers=admin).status_code == 404


def test_unknown_experiment_is_404(client, admin):
    assert client.get("/api/admin/experiments/nope", headers=admin).status_code == 404
    assert client.put("/api/admin/experiments/nope", json=fields_of(NEW), headers=admin).status_code == 404
    assert client.delete("/api/admin/experiments/nope", headers=admin).status_code == 404
    assert client.get("/api/admin/experiments/nope/history", headers=admin).status_code == 404


def test_if_match_detects_concurrent_edits(client, admin):
    client.post("/api/admin/experiments", json=NEW, headers=admin)
    url = "/api/admin/experiments/checkout_copy_test"
    ok = client.put(url, json=fields_of(NEW) | {"description": "a"}, headers={**admin, "If-Match": '"1"'})
    assert ok.status_code == 200 and ok.json()["version"] == 2
    stale = client.put(url, json=fields_of(NEW) | {"description": "b"}, headers={**admin, "If-Match": '"1"'})
    assert stale.status_code == 412
    assert client.get(url, headers=admin).json()["description"] == "a"
    assert client.put(url, json=fields_of(NEW), headers={**admin, "If-Match": "soon"}).status_code == 400
    assert client.delete(url, headers={**admin, "If-Match": '"1"'}).status_code == 412


def _variants(*allocations_and_controls):
    return [
        {"variant_key": f"v{i}", "label": f"V{i}", "allocation": allocation, "is_control": control}
        for i, (allocation, control) in enumerate(allocations_and_controls)
    ]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"experiment_key": "Bad-Key"}, "experiment_key"),
        ({"experiment_key": "k" * 65}, "experiment_key"),
        ({"cookie_name": "has space"}, "cookie_name"),
        ({"cookie_name": "semi;colon"}, "cookie_name"),
        ({"eligible_routes": ["no-slash"]}, "eligible_routes"),
        ({"name": ""}, "name"),
        ({"variants": _variants((50, True), (50, True))}, "variants"),
        ({"variants": _variants((50, False), (50, False))}, "variants"),
        ({"variants": _variants((50, True), (40, False))}, "variants"),
        ({"variants": _variants((50, True), (50.5, False))}, "variants"),
        ({"variants": _variants((150, True), (-50, False))}, "variants"),
        ({"variants": _variants((100, True))}, "variants"),
        (
            {
                "variants": [
                    {"variant_key": "a", "label": "A", "allocation": 50, "is_control": True},
                    {"variant_key": "a", "label": "B", "allocation": 50},
                ]
            },
            "variants",
        ),
        (
            {
                "variants": [
                    {"variant_key": "Bad Key", "label": "A", "allocation": 50, "is_control": True},
                    {"variant_key": "b", "label": "B", "allocation": 50},
                ]
            },
            "variants",
        ),
        ({"unexpected": 1}, "$.unexpected"),
        ({"variants": [dict(v, extra=1) for v in _variants((50, True), (50, False))]}, "$.variants[0].extra"),
        ({"planned_sessions": 1}, "planned_sessions"),
        ({"planned_sessions": 1.5}, "planned_sessions"),
        ({"planned_sessions": 10_000, "target_mde": 0.05}, "target_mde"),
        ({"target_mde": 0}, "target_mde"),
        ({"target_mde": -0.1}, "target_mde"),
        ({"primary_metric": "Conversion"}, "primary_metric"),
        ({"primary_metric": "impression"}, "primary_metric"),
        ({"primary_metric": "form_start/form_start"}, "primary_metric"),
        ({"primary_metric": "value_per_session/form_start"}, "primary_metric"),
        ({"primary_metric": "value_per_session"}, "guardrail_metrics[0]"),
        ({"guardrail_metrics": ["cta_click", "cta_click"]}, "guardrail_metrics[1]"),
        ({"guardrail_metrics": ["conversion"]}, "guardrail_metrics[0]"),
        ({"guardrail_metrics": "cta_click"}, "guardrail_metrics"),
        ({"guardrail_metrics": [f"e{i}" for i in range(11)]}, "guardrail_metrics"),
        ({"value_cap_percentile": 100}, "value_cap_percentile"),
        ({"value_cap_percentile": 0}, "value_cap_percentile"),
    ],
)
def test_invalid_definitions_are_400_naming_the_field_and_change_nothing(client, admin, change, field):
    before = client.get("/api/admin/experiments", headers=admin).json()
    body = copy.deepcopy(NEW) | change
    response = client.post("/api/admin/experiments", json=body, headers=admin)
    assert response.status_code == 400, response.text
    assert field in response.json()["field"]
    # The path is in `field`; the sentence does not repeat it (the dashboard shows it to people).
    assert " - at `" not in response.json()["error"], response.text
    put_body = {k: v for k, v in body.items() if k != "experiment_key"}
    if "experiment_key" not in change:
        put = client.put("/api/admin/experiments/homepage_hero_test", json=put_body, headers=admin)
        assert put.status_code == 400, put.text
    assert client.get("/api/admin/experiments", headers=admin).json() == before


ANALYSIS_FIELDS = ("planned_sessions", "target_mde", "primary_metric", "guardrail_metrics", "value_cap_percentile")


def test_analysis_fields_default_are_stored_versioned_and_kept_out_of_the_public_registry(client, admin):
    created = client.post("/api/admin/experiments", json=NEW, headers=admin).json()
    assert {f: created[f] for f in ANALYSIS_FIELDS} == {
        "planned_sessions": None,
        "target_mde": None,
        "primary_metric": "conversion",
        "guardrail_metrics": ["value_per_session"],
        "value_cap_percentile": None,
    }
    url = "/api/admin/experiments/checkout_copy_test"
    tuned = {
        **fields_of(created),
        "planned_sessions": 40_000,
        "primary_metric": "form_submit",
        "guardrail_metrics": ["value_per_session", "form_submit/form_start"],
        "value_cap_percentile": 99.5,
    }
    assert client.put(url, json=tuned, headers=admin).status_code == 200
    current = client.get(url, headers=admin).json()
    assert {f: current[f] for f in ANALYSIS_FIELDS} == {f: tuned.get(f) for f in ANALYSIS_FIELDS}
    history = client.get(f"{url}/history", headers=admin).json()
    assert [h["definition"]["planned_sessions"] for h in history] == [None, 40_000]
    assert history[1]["definition"]["guardrail_metrics"] == ["value_per_session", "form_submit/form_start"]
    by_mde = {**fields_of(current), "target_mde": 0.05, "guardrail_metrics": []}
    assert client.put(url, json=by_mde, headers=admin).json()["target_mde"] == 0.05
    public = next(e for e in client.get("/api/experiments").json() if e["experiment_key"] == "checkout_copy_test")
    assert not set(ANALYSIS_FIELDS) & set(public)


def test_malformed_admin_json_is_400(client, admin):
    response = client.post("/api/admin/experiments", content=b"{oops", headers={**admin, "content-type": "application/json"})
    assert response.status_code == 400


def test_settings_toggle_restores_the_same_public_registry(client, admin):
    before = client.get("/api/experiments").json()
    assert client.get("/api/admin/settings", headers=admin).json()["experiments_enabled"] is True
    assert client.put("/api/admin/settings", json={"experiments_enabled": False}, headers=admin).status_code == 200
    assert client.get("/api/experiments").json() == []
    for path in (
        "/api/admin/experiments",
        "/api/admin/experiments/homepage_hero_test",
        "/api/admin/experiments/homepage_hero_test/history",
    ):
        assert client.get(path, headers=admin).status_code == 404
    assert client.post("/api/admin/experiments", json=NEW, headers=admin).status_code == 404
    assert client.get("/api/admin/settings", headers=admin).json()["experiments_enabled"] is False
    restored = client.put("/api/admin/settings", json={"experiments_enabled": True}, headers=admin)
    assert restored.json()["experiments_enabled"] is True
    assert client.get("/api/experiments").json() == before
    assert client.put("/api/admin/settings", json={"experiments_enabled": "no"}, headers=admin).status_code == 400


def test_public_registry_is_cacheable(client, admin):
    first = client.get("/api/experiments")
    assert "max-age" in first.headers["cache-control"]
    etag = first.headers["etag"]
    assert client.get("/api/experiments", headers={"If-None-Match": etag}).status_code == 304
    client.put("/api/admin/settings", json={"experiments_enabled": False}, headers=admin)
    changed = client.get("/api/experiments", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag


def test_openapi_and_health(client):
    schema = client.get("/schema/openapi.json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/admin/experiments" in paths
    for beacon_path in ("/api/experiments/event", "/api/experiments/impression", "/api/experiments/batch"):
        assert "202" in paths[beacon_path]["post"]["responses"]
    assert client.get("/schema").status_code == 200
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text


def test_archived_experiment_is_restored_with_its_definition(client, admin):
    assert client.post("/api/admin/experiments", json=NEW, headers=admin).status_code == 201
    url = "/api/admin/experiments/checkout_copy_test"
    assert client.post(f"{url}/restore", headers=admin).status_code == 409  # not archived
    assert client.delete(url, headers=admin).status_code == 200
    assert client.get(url, headers=admin).status_code == 404
    assert client.post(f"{url}/restore", headers={**admin, "If-Match": '"1"'}).status_code == 412
    restored = client.post(f"{url}/restore", headers=admin)
    assert restored.status_code == 200, restored.text
    assert restored.json()["archived"] is False and restored.json()["version"] == 3
    assert fields_of(restored.json()) == fields_of(NEW) | {"variants": [{"is_control": False} | v for v in NEW["variants"]]}
    assert "checkout_copy_test" in [e["experiment_key"] for e in client.get("/api/experiments").json()]
    history = client.get(f"{url}/history", headers=admin).json()
    assert [h["action"] for h in history] == ["create", "archive", "restore"]
    assert client.post("/api/admin/experiments/nope/restore", headers=admin).status_code == 404


def test_changing_allocations_of_an_enabled_experiment_needs_force(client, admin):
    assert client.post("/api/admin/experiments", json=NEW, headers=admin).status_code == 201
    url = "/api/admin/experiments/checkout_copy_test"
    moved = fields_of(NEW) | {"variants": [dict(v, allocation=a) for v, a in zip(NEW["variants"], (50, 25, 25))]}
    refused = client.put(url, json=moved, headers=admin)
    assert refused.status_code == 409, refused.text
    assert refused.json()["ok"] is False and refused.json()["field"] == "$.variants"
    assert "force=true" in refused.json()["error"] and "allocations" in refused.json()["error"]
    assert client.get(url, headers=admin).json()["version"] == 1
    forced = client.put(f"{url}?force=true", json=moved, headers=admin)
    assert forced.status_code == 200 and forced.json()["variants"][0]["allocation"] == 50
    # Disabled in the same change, or already disabled: nothing is running to disturb.
    back = fields_of(NEW) | {"enabled": False}
    assert client.put(url, json=back, headers=admin).status_code == 200
    assert [h["action"] for h in client.get(f"{url}/history", headers=admin).json()] == ["create", "update", "update"]


def test_removing_a_variant_with_events_needs_force(client, admin, clickhouse):
    from tests.test_results_api import NOW, insert

    disabled = NEW | {"enabled": False}
    assert client.post("/api/admin/experiments", json=disabled, headers=admin).status_code == 201
    url = "/api/admin/experiments/checkout_copy_test"
    without_shorter = fields_of(disabled) | {"variants": [NEW["variants"][0], dict(NEW["variants"][1], allocation=66)]}
    assert client.put(url, json=without_shorter, headers=admin).status_code == 200  # no data yet: no question
    restored = fields_of(disabled)
    assert client.put(url, json=restored, headers=admin).status_code == 200
    insert(clickhouse, [("checkout_copy_test", "shorter", "s1", "impression", None, NOW)])
    refused = client.put(url, json=without_shorter, headers=admin)
    assert refused.status_code == 409 and "shorter" in refused.json()["error"] and "force=true" in refused.json()["error"]
    assert client.put(f"{url}?force=true", json=without_shorter, headers=admin).status_code == 200


@pytest.mark.parametrize("path", ["/api/experiments", "/api/experiments/"])
def test_public_registry_varies_on_origin_on_every_answer(client, path):
    for headers in ({}, {"Origin": "https://site.example"}, {"Origin": "https://elsewhere.example"}):
        answer = client.get(path, headers=headers)
        assert answer.status_code == 200
        assert "origin" in answer.headers.get("vary", "").lower(), (headers, answer.headers)
        again = client.get(path, headers={**headers, "If-None-Match": answer.headers["etag"]})
        assert again.status_code == 304 and "origin" in again.headers.get("vary", "").lower()
