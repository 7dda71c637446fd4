"""POST /api/v1/sql and the exports, over HTTP on the whole serve app with its embedded chDB:
read-only by ClickHouse's own settings, bounded by the limits, streamed in each format."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import count_events
from tests.helpers import auth, serve_client
from tests.test_results_api import insert

NOW = datetime.now(timezone.utc).replace(microsecond=0)


@pytest.fixture()
def client(settings):
    limited = dataclasses.replace(settings, sql_max_execution_s=2, sql_max_result_rows=1000, rollup=False)
    with serve_client(limited) as test_client:
        test_client.analyst = auth(settings, "analyst", "ana")  # type: ignore[attr-defined]
        yield test_client


def sql(client, query, **extra):
    return client.post("/api/v1/sql", json={"query": query, **extra}, headers=client.analyst)


def test_no_token_is_401_and_a_bad_token_too(client):
    assert client.post("/api/v1/sql", json={"query": "SELECT 1"}).status_code == 401
    refused = client.post("/api/v1/sql", json={"query": "SELECT 1"}, headers={"Authorization": "Bearer nope"})
    assert refused.status_code == 401
    assert refused.json()["ok"] is False


def test_select_answers_json_rows_csv_tsv_and_parquet(client, clickhouse):
    insert(
        clickhouse,
        [
            ("homepage_hero_test", "control", "s1", "impression", None, NOW),
            ("homepage_hero_test", "variant_b", "s2", "conversion", 5.0, NOW),
        ],
    )
    query = "SELECT variant_key, count() AS n FROM abacus.events FINAL GROUP BY variant_key ORDER BY variant_key"
    rows = sql(client, query)
    assert rows.status_code == 200, rows.text
    assert rows.headers["content-type"].startswith("application/x-ndjson")
    assert [json.loads(line) for line in rows.text.splitlines()] == [
        {"variant_key": "control", "n": 1},
        {"variant_key": "variant_b", "n": 1},
    ]
    as_csv = sql(client, query, format="csv")
    # One charset parameter: Litestar appends it to every text/* media type itself.
    assert as_csv.status_code == 200 and as_csv.headers["content-type"] == "text/csv; charset=utf-8"
    assert list(csv.reader(io.StringIO(as_csv.text))) == [["variant_key", "n"], ["control", "1"], ["variant_b", "1"]]
    as_tsv = client.post("/api/v1/sql?format=tsv", json={"query": query}, headers=client.analyst)
    assert as_tsv.headers["content-type"] == "text/tab-separated-values; charset=utf-8"
    assert as_tsv.text.splitlines() == ["variant_key\tn", "control\t1", "variant_b\t1"]
    parquet = sql(client, query, format="parquet")
    assert parquet.status_code == 200 and parquet.content[:4] == b"PAR1" and parquet.content[-4:] == b"PAR1"


def test_a_large_answer_is_streamed_in_chunks(client):
    with client.stream(
        "POST",
        "/api/v1/sql",
        json={"query": "SELECT number, repeat('x', 100) FROM numbers(999)", "format": "csv"},
        headers=client.analyst,
    ) as response:
        assert response.status_code == 200
        assert "content-length" not in response.headers  # chunked, not built whole first
        body = b"".join(response.iter_bytes())
    assert len(body.splitlines()) == 1000


@pytest.mark.parametrize(
    "query",
    [
        "INSERT INTO abacus.events (event_id, experiment_key, variant_key, session_id, event_type, received_at) VALUES ('x', 'homepage_hero_test', 'control', 's', 'conversion', now())",
        "DROP TABLE abacus.events",
        "CREATE TABLE abacus.mine (x UInt8) ENGINE = Memory",
        "ALTER TABLE abacus.events DELETE WHERE 1",
        "TRUNCATE TABLE abacus.events",
        "SELECT 1 SETTINGS max_execution_time = 1000",
        "SELECT * FROM file('/etc/passwd', 'LineAsString')",
    ],
)
def test_writes_ddl_and_changed_settings_are_refused_and_change_nothing(client, clickhouse, query):
    insert(clickhouse, [("homepage_hero_test", "control", "s1", "impression", None, NOW)])
    refused = sql(client, query)
    assert refused.status_code == 403, refused.text
    assert refused.json()["ok"] is False and refused.json()["field"] == "$.query"
    assert "readonly" in refused.json()["error"].lower() or "read-only" in refused.json()["error"].lower()
    assert count_events(clickhouse) == 1
    assert "mine" not in {row[0] for row in clickhouse.client().query("SHOW TABLES FROM abacus").result_rows}


def test_a_runaway_query_is_stopped_by_its_time_limit(client):
    stopped = sql(client, "SELECT count() FROM numbers_mt(1000000000000)")
    assert stopped.status_code == 422, stopped.text
    assert "limits" in stopped.json()["error"] and "Timeout" in stopped.json()["error"]


def test_an_answer_over_the_row_limit_is_refused_not_truncated(client):
    stopped = sql(client, "SELECT number FROM numbers(100000)")
    assert stopped.status_code == 422, stopped.text
    assert "TOO_MANY_ROWS" in stopped.json()["error"]


def test_bad_sql_is_400_naming_the_query(client):
    bad = sql(client, "SELEKT 1")
    assert bad.status_code == 400 and bad.json()["field"] == "$.query" and "Syntax error" in bad.json()["error"]
    assert client.post("/api/v1/sql", json={"query": "SELECT 1", "format": "xml"}, headers=client.analyst).status_code == 400
    assert client.post("/api/v1/sql", json={}, headers=client.analyst).json()["field"] == "$.query"


def test_results_csv_has_one_row_per_variant_with_the_nine_counts(client, clickhouse):
    insert(
        clickhouse,
        [
            ("homepage_hero_test", "control", "s1", "impression", None, NOW),
            ("homepage_hero_test", "tiny_gang_social_proof", "s2", "impression", None, NOW),
            ("homepage_hero_test", "tiny_gang_social_proof", "s2", "conversion", 7.5, NOW),
        ],
    )
    answer = client.get("/api/v1/experiments/results.csv?experiment_key=homepage_hero_test", headers=client.analyst)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "text/csv; charset=utf-8" and answer.headers["x-abacus-source"] == "events"
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    json_body = client.get("/api/v1/experiments/results?experiment_key=homepage_hero_test", headers=client.analyst).json()[0]
    assert [r["variant_key"] for r in rows] == [v["variant_key"] for v in json_body["variants"]]
    for row, variant in zip(rows, json_body["variants"]):
        for key in ("impressions", "conversions", "unique_sessions"):
            assert int(row[key]) == variant[key]
        assert float(row["conversion_value_total"]) == variant["conversion_value_total"]
    assert rows[1]["conversion_value_total"] == "7.5" and rows[0]["is_control"] == "true"
    assert client.get("/api/v1/experiments/results.csv?from=x", headers=client.analyst).json()["field"] == "from"
    assert client.get("/api/v1/experiments/results.csv").status_code == 401


def test_raw_events_export_in_a_window_as_csv_and_parquet(client, clickhouse):
    old, recent = NOW - timedelta(days=3), NOW - timedelta(hours=1)
    insert(
        clickhouse,
        [
            ("homepage_hero_test", "control", "s1", "impression", None, old),
            ("homepage_hero_test", "control", "s2", "conversion", 3.0, recent),
            ("other", "a", "s3", "impression", None, recent),
        ],
    )
    window = f"from={(NOW - timedelta(days=1)).isoformat()}&to={NOW.isoformat()}".replace("+", "%2B")
    answer = client.get(f"/api/v1/experiments/events?experiment_key=homepage_hero_test&{window}", headers=client.analyst)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert [(r["session_id"], r["event_type"], r["conversion_value"]) for r in rows] == [("s2", "conversion", "3")]
    everything = client.get("/api/v1/experiments/events?experiment_key=homepage_hero_test&format=parquet", headers=client.analyst)
    assert everything.status_code == 200 and everything.content[:4] == b"PAR1"
    counted = (
        clickhouse.client()
        .query("SELECT count() FROM format(Parquet, {data:String})", parameters={"data": everything.content})
        .result_rows[0][0]
    )
    assert counted == 2
    assert client.get("/api/v1/experiments/events?experiment_key=nope", headers=client.analyst).status_code == 404
    assert client.get("/api/v1/experiments/events?experiment_key=homepage_hero_test").status_code == 401
