"""The OpenAPI document describes what the API really answers: every key of real results, analysis,
timeseries and rollup answers (with phases, extra metrics and a value cap, so the optional parts are
there) appears in the schema of that operation's 200; the bearer scheme is declared and used; every
documented error is the one error body, and real error answers validate against it."""

from __future__ import annotations

import jsonschema
import pytest

from tests.helpers import auth, serve_client
from tests.test_results_api import insert
from tests.test_results_metrics import KEY, START, create, generate


def resolve(spec: dict, schema: dict) -> dict:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = spec["components"]["schemas"][name]
    return schema


def alternatives(spec: dict, schema: dict) -> list[dict]:
    schema = resolve(spec, schema)
    for combinator in ("oneOf", "anyOf"):
        if combinator in schema:
            return [alt for sub in schema[combinator] for alt in alternatives(spec, sub)]
    return [schema]


def undocumented(spec: dict, schema: dict, value: object, where: str = "$") -> list[str]:
    """Paths of the answer's keys the schema does not describe."""
    if isinstance(value, dict):
        objects = [s for s in alternatives(spec, schema) if s.get("type") == "object" or "properties" in s]
        if not objects:
            return [f"{where}: an object where the schema has {[s.get('type') for s in alternatives(spec, schema)]}"]
        missing = []
        for key, item in value.items():
            holders = [s["properties"][key] for s in objects if key in s.get("properties", {})]
            holders += [s["additionalProperties"] for s in objects if isinstance(s.get("additionalProperties"), dict)]
            if not holders:
                missing.append(f"{where}.{key}")
                continue
            missing += min((undocumented(spec, h, item, f"{where}.{key}") for h in holders), key=len)
        return missing
    if isinstance(value, list):
        arrays = [s for s in alternatives(spec, schema) if s.get("type") == "array"]
        if not arrays:
            return [f"{where}: an array where the schema has none"]
        return [
            m
            for i, item in enumerate(value)
            for m in min((undocumented(spec, a["items"], item, f"{where}[{i}]") for a in arrays), key=len)
        ]
    return []


def ok_schema(spec: dict, path: str) -> dict:
    return spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]


@pytest.fixture()
def served(settings, clean_clickhouse):
    with serve_client(settings) as client:
        client.admin = auth(settings, "admin")  # type: ignore[attr-defined]
        create(client, guardrail_metrics=["value_per_session", "form_submit/form_start"], value_cap_percentile=90)
        rows, _ = generate(11, {"control": 0.3, "treat": 0.4}, {"control": 20.0, "treat": 20.0}, sessions=300)
        rows += [(KEY, "control", "both-0", "impression", None, START), (KEY, "treat", "both-0", "impression", None, START)]
        insert(clean_clickhouse, rows)
        yield client, client.get("/schema/openapi.json").json()


def test_every_key_of_real_answers_is_in_the_schema(served, settings):
    client, spec = served
    analyst = auth(settings, "analyst", "ana")
    answers = {
        "/api/v1/experiments/results": client.get(
            f"/api/v1/experiments/results?experiment_key={KEY}&metrics=all&sequential=true", headers=analyst
        ),
        "/api/v1/experiments/results/timeseries": client.get(
            f"/api/v1/experiments/results/timeseries?experiment_key={KEY}&interval=hour", headers=analyst
        ),
        "/api/v1/admin/rollup": client.get("/api/v1/admin/rollup", headers=client.admin),
    }
    stratified = client.get(f"/api/v1/experiments/results?experiment_key={KEY}&phase=all", headers=analyst)
    for path, answer in answers.items():
        assert answer.status_code == 200, answer.text
        assert undocumented(spec, ok_schema(spec, path), answer.json()) == [], path
    assert stratified.status_code == 200
    assert undocumented(spec, ok_schema(spec, "/api/v1/experiments/results"), stratified.json()) == []
    analysis = answers["/api/v1/experiments/results"].json()[0]["analysis"]
    # The answer did have the deep parts the check walked through.
    assert analysis["value_cap"]["cap"] is not None and analysis["sequential_tuning"] is not None
    assert analysis["variants"][1]["metric_comparisons"]["form_submit/form_start"]["p_value"] is not None
    assert analysis["variants"][1]["comparison"]["conversion_rate"]["bayesian"]["chance_to_beat_control"] is not None
    # The analysis is typed all the way down, not a free-form object.
    results = resolve(spec, ok_schema(spec, "/api/v1/experiments/results")["items"])
    assert "freshness" in results["required"], "every answer says where its numbers came from"
    typed = alternatives(spec, results["properties"]["analysis"])
    assert any("variants" in s.get("properties", {}) for s in typed)


def test_the_bearer_scheme_is_declared_and_used(served):
    _, spec = served
    schemes = spec["components"]["securitySchemes"]
    assert any(s["type"] == "http" and s["scheme"].lower() == "bearer" for s in schemes.values())
    operation = spec["paths"]["/api/v1/experiments/results"]["get"]
    assert [set(requirement) for requirement in operation["security"]] == [set(schemes)]


def test_errors_are_documented_with_the_real_error_body(served, settings):
    client, spec = served
    error_schemas = [
        response["content"]["application/json"]["schema"]
        for path in spec["paths"].values()
        for operation in path.values()
        if isinstance(operation, dict) and "responses" in operation
        for status, response in operation["responses"].items()
        if status.startswith(("4", "5")) and "content" in response
    ]
    assert len(error_schemas) > 40
    for schema in error_schemas:
        schema = resolve(spec, schema)
        assert set(schema["required"]) == {"ok", "error", "field"}, schema
        assert "status_code" not in schema["properties"] and "detail" not in schema["properties"]
    analyst = auth(settings, "analyst", "ana")
    real = {
        400: client.get("/api/v1/experiments/results?confidence=2", headers=analyst),
        401: client.get("/api/v1/experiments/results"),
        403: client.get("/api/v1/admin/rollup", headers=analyst),
        404: client.get("/api/v1/experiments/results?experiment_key=no_such_experiment", headers=analyst),
    }
    for status, answer in real.items():
        assert answer.status_code == status, answer.text
        documented = spec["paths"][answer.request.url.path]["get"]["responses"][str(status)]["content"]["application/json"]
        jsonschema.validate(answer.json(), resolve(spec, documented["schema"]))
        assert answer.json()["ok"] is False
    assert real[400].json()["field"] == "confidence"


def test_results_have_meaningful_examples(served):
    _, spec = served
    for path in ("/api/v1/experiments/results", "/api/v1/experiments/results/timeseries", "/api/v1/admin/rollup"):
        media = spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
        example = media["examples"]["typical"]["value"]
        assert undocumented(spec, media["schema"], example) == [], path
        jsonschema.validate(example, {**resolve(spec, media["schema"]), "components": spec["components"]})
    results = spec["paths"]["/api/v1/experiments/results"]["get"]["responses"]["200"]["content"]["application/json"]
    answer = results["examples"]["typical"]["value"][0]
    treat = answer["analysis"]["variants"][1]
    assert answer["variants"][0]["impressions"] > 0 and treat["comparison"]["conversion_rate"]["p_value"] is not None
    assert treat["status_code"] in {"win", "loss", "no_difference"}
