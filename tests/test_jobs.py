"""Background jobs end to end: the admin API enqueues on rq, serve's real rq worker (a thread
beside the app, as under `abacus serve`) runs them against the test Valkey and chDB, and the job
endpoint reports their result. Replay stores dead letters once; erase removes a session's events
and changes the results by exactly its contribution; retention is a TTL in the table definition."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
import redis
from litestar.testing import TestClient

from shared.clickhouse import ClickHouse, migrate
from shared.retention import current_ttl
from shared.settings import Settings
from tests.conftest import count_events, raw_count, wait_for
from tests.helpers import auth, beacon, serve_client, wait_until_rolled_up
from tests.test_worker import envelope, event

EVENT = "/api/experiments/event"
RESULTS = "/api/v1/experiments/results?experiment_key=homepage_hero_test"
COUNTS = ("impressions", "cta_clicks", "form_starts", "form_submits", "conversions", "unique_sessions")


@pytest.fixture()
def client(settings: Settings) -> Iterator[TestClient]:
    with serve_client(settings) as client:
        yield client


def finished(client: TestClient, admin: dict, answer) -> dict:  # type: ignore[no-untyped-def]
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]

    def done() -> dict | None:
        state = client.get(f"/api/v1/admin/jobs/{job_id}", headers=admin).json()
        assert state["status"] != "failed", state
        return state if state["status"] == "finished" else None

    return wait_for(done, timeout=60)  # type: ignore[return-value]


def dead_letter(r: redis.Redis, settings: Settings, fields: dict, reason: str, source: str) -> bytes:
    return r.xadd(
        settings.dead_letter_stream, {**fields, b"source_id": source.encode(), b"reason": reason.encode(), b"dead_at_ms": 1}
    )


def variant_counts(client: TestClient, settings: Settings) -> dict[str, dict[str, int]]:
    answer = client.get(RESULTS, headers=auth(settings, "analyst"))
    assert answer.status_code == 200
    return {v["variant_key"]: {k: v[k] for k in COUNTS} for v in answer.json()[0]["variants"]}


# ----- dead letters --------------------------------------------------------------------------
def test_dead_letters_are_listed_and_replayed_once_each_event_stored_once(
    client: TestClient, settings: Settings, redis_client: redis.Redis, clean_clickhouse: ClickHouse
) -> None:
    admin = auth(settings)
    stored = event("c", event_id="stored-1", session_id="s-stored")
    redis_client.xadd(settings.stream, envelope(stored))  # as ingest writes it
    wait_for(lambda: count_events(clean_clickhouse) == 1)
    # What the worker parks: a batch ClickHouse refused while it was down, one holding an event
    # that did reach ClickHouse before, and one that can never be decoded.
    now = event("a", event_id="dl-1", session_id="s-dl")
    both = [event("b", event_id="dl-2", session_id="s-dl"), stored]
    first = dead_letter(redis_client, settings, envelope(now), "insert rejected: test", "1-1")
    second = dead_letter(redis_client, settings, envelope(*both), "delivered 6 times", "1-2")
    poison = dead_letter(redis_client, settings, {b"e": b"\xc1 not msgpack"}, "undecodable", "1-3")

    listed = client.get("/api/v1/admin/dead-letters", headers=admin).json()
    assert [(d["id"], d["reason"], d["events"], d["replayed_as"]) for d in listed] == [
        (first.decode(), "insert rejected: test", 1, None),
        (second.decode(), "delivered 6 times", 2, None),
        (poison.decode(), "undecodable", None, None),
    ]
    length = redis_client.xlen(settings.stream)

    dry = finished(
        client, admin, client.post("/api/v1/admin/dead-letters/replay", json={"all": True, "dry_run": True}, headers=admin)
    )
    assert dry["kind"] == "replay_dead_letters"
    assert dry["result"]["dry_run"] is True and len(dry["result"]["replayed"]) == 3 and dry["result"]["events"] == 3
    assert redis_client.xlen(settings.stream) == length  # a dry run changes nothing

    chosen = [first.decode(), second.decode()]
    done = finished(client, admin, client.post("/api/v1/admin/dead-letters/replay", json={"ids": chosen}, headers=admin))
    assert [r["id"] for r in done["result"]["replayed"]] == chosen and done["result"]["events"] == 3
    again = finished(client, admin, client.post("/api/v1/admin/dead-letters/replay", json={"all": True}, headers=admin))
    assert again["result"]["already_replayed"] == chosen  # a second replay appends nothing twice
    assert [r["id"] for r in again["result"]["replayed"]] == [poison.decode()]

    wait_for(lambda: count_events(clean_clickhouse) == 3)  # stored-1, dl-1, dl-2: stored-1 once
    wait_for(lambda: redis_client.xlen(settings.dead_letter_stream) == 4)  # the poison came back
    wait_until_rolled_up(redis_client, settings.stream)
    ids = clean_clickhouse.client().query("SELECT event_id, count() FROM abacus.events FINAL GROUP BY event_id ORDER BY event_id")
    assert ids.result_rows == [("dl-1", 1), ("dl-2", 1), ("stored-1", 1)]
    assert raw_count(clean_clickhouse) >= 3
    assert variant_counts(client, settings)["control"]["impressions"] == 3
    relisted = client.get(f"/api/v1/admin/dead-letters?after={first.decode()}&limit=1", headers=admin).json()
    assert [(d["id"], d["replayed_as"] is not None) for d in relisted] == [(second.decode(), True)]


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "$.ids"),
        ({"ids": ["1-0"], "all": True}, "$.ids"),
        ({"ids": []}, "$.ids"),
        ({"ids": ["nope"]}, "$.ids[0]"),
        ({"all": True, "x": 1}, None),
    ],
)
def test_a_bad_replay_request_is_a_400_and_enqueues_nothing(
    client: TestClient, settings: Settings, redis_client, body, field
) -> None:  # type: ignore[no-untyped-def]
    before = redis_client.llen("rq:queue:abacus-jobs")
    answer = client.post("/api/v1/admin/dead-letters/replay", json=body, headers=auth(settings))
    assert answer.status_code == 400, answer.text
    if field is not None:
        assert answer.json()["field"] == field
    assert redis_client.llen("rq:queue:abacus-jobs") == before


def test_job_endpoints_are_for_admins_only_and_an_unknown_job_is_a_404(client: TestClient, settings: Settings) -> None:
    analyst = auth(settings, "analyst")
    assert client.post("/api/v1/admin/erase", json={"session_id": "x"}, headers=analyst).status_code == 403
    assert client.get("/api/v1/admin/dead-letters", headers=analyst).status_code == 403
    assert client.get("/api/v1/admin/jobs/nope").status_code == 401
    assert client.get("/api/v1/admin/jobs/no-such-job", headers=auth(settings)).status_code == 404
    assert client.get("/api/v1/admin/dead-letters?limit=0", headers=auth(settings)).status_code == 400
    assert client.post("/api/v1/admin/erase", json={"session_id": ""}, headers=auth(settings)).status_code == 400


# ----- erase ---------------------------------------------------------------------------------
def test_erase_removes_a_sessions_events_and_changes_results_by_exactly_its_contribution(
    client: TestClient, settings: Settings, redis_client: redis.Redis, clean_clickhouse: ClickHouse
) -> None:
    admin = auth(settings)
    sent = [
        beacon(session_id="erase-me", event_name="impression"),
        beacon(session_id="erase-me", event_name="cta_click"),
        beacon(session_id="erase-me", event_name="conversion", value=5),
        beacon(session_id="keep-1", event_name="impression"),
        beacon(session_id="keep-1", event_name="conversion", value=2),
        beacon(session_id="keep-2", event_name="impression"),
    ]
    for item in sent:
        assert client.post(EVENT, json=item).status_code == 202
    wait_for(lambda: count_events(clean_clickhouse) == 6)
    wait_until_rolled_up(redis_client, settings.stream)
    before = variant_counts(client, settings)["control"]

    done = finished(client, admin, client.post("/api/v1/admin/erase", json={"session_id": "erase-me"}, headers=admin))
    assert done["result"]["events_erased"] == 3
    assert count_events(clean_clickhouse, "session_id = 'erase-me'") == 0
    assert (
        clean_clickhouse.client()
        .query("SELECT count() FROM abacus.rollup_events WHERE session_id = 'erase-me'")
        .result_rows[0][0]
        == 0
    )
    expected = dict(before, impressions=before["impressions"] - 1, cta_clicks=before["cta_clicks"] - 1)
    expected.update(conversions=before["conversions"] - 1, unique_sessions=before["unique_sessions"] - 1)

    def rolled_up_again() -> bool:
        answer = client.get(RESULTS, headers=auth(settings, "analyst"))
        return answer.headers["x-abacus-source"] == "rollup"

    assert variant_counts(client, settings)["control"] == expected  # from the events meanwhile, or the rebuilt rollup
    wait_for(rolled_up_again, timeout=30)
    assert variant_counts(client, settings)["control"] == expected  # and from the rollup once rebuilt

    audit = clean_clickhouse.client().query(
        "SELECT job_id, subject_kind, subject_sha256, requested_by, events_erased FROM abacus.erasure_audit FINAL"
    )
    assert audit.result_rows == [
        (done["id"], "session_id", hashlib.sha256(b"session_id:erase-me").hexdigest(), "alice@example.com", 3)
    ]
    # Asked again: nothing left to erase, and it says so.
    again = finished(client, admin, client.post("/api/v1/admin/erase", json={"session_id": "erase-me"}, headers=admin))
    assert again["result"]["events_erased"] == 0
    clean_clickhouse.client().command("TRUNCATE TABLE abacus.erasure_audit")


# ----- retention -----------------------------------------------------------------------------
def test_retention_is_a_ttl_in_the_table_definition_and_expires_old_events(clean_clickhouse: ClickHouse) -> None:
    client = clean_clickhouse.client()
    try:
        migrate(client, retention_days=30)
        assert current_ttl(client) == "TTL toDateTime(received_at) + toIntervalDay(30)"
        client.command(
            "INSERT INTO abacus.events (event_id, experiment_key, variant_key, session_id, event_type, path, metadata, received_at) "
            "VALUES ('old', 'e', 'v', 's', 'impression', '/', '{}', now64(3) - INTERVAL 40 DAY), "
            "('new', 'e', 'v', 's', 'impression', '/', '{}', now64(3) - INTERVAL 20 DAY)"
        )
        client.command("OPTIMIZE TABLE abacus.events FINAL")
        assert [row[0] for row in client.query("SELECT event_id FROM abacus.events").result_rows] == ["new"]
        migrate(client, retention_days=30)  # again: nothing to change
        assert current_ttl(client) == "TTL toDateTime(received_at) + toIntervalDay(30)"
    finally:
        migrate(client, retention_days=0)
    assert current_ttl(client) == ""


# ----- verification --------------------------------------------------------------------------
def test_verification_finds_the_rollup_equal_to_the_events_and_reports_a_difference_as_a_metric(
    client: TestClient, settings: Settings, redis_client: redis.Redis, clean_clickhouse: ClickHouse
) -> None:
    admin = auth(settings)
    for session in ("v-1", "v-2"):
        assert client.post(EVENT, json=beacon(session_id=session, event_name="impression")).status_code == 202
    wait_for(lambda: count_events(clean_clickhouse) == 2)
    wait_until_rolled_up(redis_client, settings.stream)
    agreed = finished(client, admin, client.post("/api/v1/admin/rollup/verify", headers=admin))
    assert agreed["result"]["mismatches"] == 0 and agreed["result"]["variants_checked"] >= 1
    metrics = client.get("/metrics").text
    assert "abacus_rollup_verification_mismatches 0.0" in metrics
    # A rollup row that no event explains, as a bug would leave it:
    clean_clickhouse.client().command(
        "INSERT INTO abacus.rollup_cohort_totals (experiment_key, variant_key, cohort_minute, impressions) "
        "VALUES ('homepage_hero_test', 'control', today(), 1)"
    )
    differs = finished(client, admin, client.post("/api/v1/admin/rollup/verify", headers=admin))
    assert differs["result"]["mismatches"] == 1
    assert [(d["variant_key"], d["field"], d["rollup"] - d["events"]) for d in differs["result"]["details"]] == [
        ("control", "impressions", 1)
    ]
    assert "abacus_rollup_verification_mismatches 1.0" in client.get("/metrics").text


def test_the_nightly_verification_is_enqueued_once_a_day_between_processes(redis_client: redis.Redis) -> None:
    import datetime as dt

    from jobs.schedule import enqueue_if_due

    early = dt.datetime(2026, 12, 2, 2, 59, tzinfo=dt.timezone.utc)
    late = dt.datetime(2026, 12, 2, 3, 1, tzinfo=dt.timezone.utc)
    assert not enqueue_if_due(redis_client, 3, early)
    assert [enqueue_if_due(redis_client, 3, late) for _ in range(3)] == [True, False, False]
    assert redis_client.llen("rq:queue:abacus-jobs") == 1
    assert enqueue_if_due(redis_client, 3, late + dt.timedelta(days=1))
    assert not enqueue_if_due(redis_client, 24, late)  # 24: never


def test_the_alert_check_is_enqueued_once_per_interval_between_processes(redis_client: redis.Redis) -> None:
    from jobs.schedule import enqueue_alert_check_if_due

    assert [enqueue_alert_check_if_due(redis_client, 300, 3000.0 + s) for s in (0, 10, 299)] == [True, False, False]
    assert enqueue_alert_check_if_due(redis_client, 300, 3300.0)
    assert not enqueue_alert_check_if_due(redis_client, 0, 3300.0)  # 0: never
    assert redis_client.llen("rq:queue:abacus-jobs") == 2


# ----- exports -------------------------------------------------------------------------------
def test_an_export_job_writes_the_events_to_a_file_the_admin_downloads(
    client: TestClient, settings: Settings, clean_clickhouse: ClickHouse
) -> None:
    import csv
    import io

    admin = auth(settings)
    for index in range(5):
        assert client.post(EVENT, json=beacon(session_id=f"x-{index}", event_id=f"export-{index}")).status_code == 202
    wait_for(lambda: count_events(clean_clickhouse) == 5)
    assert client.post("/api/v1/admin/exports", json={"experiment_key": "no_such_experiment"}, headers=admin).status_code == 404
    assert (
        client.post(
            "/api/v1/admin/exports", json={"experiment_key": "homepage_hero_test", "format": "xls"}, headers=admin
        ).status_code
        == 400
    )
    done = finished(
        client, admin, client.post("/api/v1/admin/exports", json={"experiment_key": "homepage_hero_test"}, headers=admin)
    )
    assert done["kind"] == "export_events" and done["result"]["bytes"] > 0
    download = client.get(f"/api/v1/admin/jobs/{done['id']}/download", headers=admin)
    assert download.status_code == 200 and download.headers["content-type"].startswith("text/csv")
    assert 'filename="homepage_hero_test-events.csv"' in download.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(download.text)))
    assert sorted(row["event_id"] for row in rows) == [f"export-{i}" for i in range(5)]
    assert len(download.content) == done["result"]["bytes"]
    parquet = finished(
        client,
        admin,
        client.post("/api/v1/admin/exports", json={"experiment_key": "homepage_hero_test", "format": "parquet"}, headers=admin),
    )
    body = client.get(f"/api/v1/admin/jobs/{parquet['id']}/download", headers=admin).content
    assert body[:4] == b"PAR1" and body[-4:] == b"PAR1"
    # Not an export, or no such job: 404; only admins.
    verify = finished(client, admin, client.post("/api/v1/admin/rollup/verify", headers=admin))
    assert client.get(f"/api/v1/admin/jobs/{verify['id']}/download", headers=admin).status_code == 404
    assert client.get(f"/api/v1/admin/jobs/{done['id']}/download", headers=auth(settings, "analyst")).status_code == 403


# ----- alerts --------------------------------------------------------------------------------
class _Receiver:
    """A webhook receiver on a local port: refuses the first delivery (500), takes the rest."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.received: list[tuple[dict, bytes]] = []
        self.refusals = 1
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                if receiver.refusals:
                    receiver.refusals -= 1
                    self.send_response(500)
                else:
                    receiver.received.append((dict(self.headers), body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_a_sample_ratio_mismatch_is_sent_once_signed_after_a_failed_delivery(
    settings: Settings, redis_client: redis.Redis, clean_clickhouse: ClickHouse
) -> None:
    import dataclasses
    import hmac
    import json

    receiver = _Receiver()
    settings = dataclasses.replace(settings, alert_webhooks=(receiver.url,), alert_secret="hook-secret")
    try:
        with serve_client(settings) as client:
            admin = auth(settings)
            # 150 sessions in control, 50 in the treatment of a 50/50 experiment: an SRM.
            sessions = [("control", f"c-{i}") for i in range(150)] + [("tiny_gang_social_proof", f"t-{i}") for i in range(50)]
            for start in range(0, len(sessions), 100):
                batch = [beacon(variant_key=v, session_id=s, event_name="impression") for v, s in sessions[start : start + 100]]
                assert client.post("/api/experiments/batch", json=batch).status_code == 202
            wait_for(lambda: count_events(clean_clickhouse) == 200)
            wait_until_rolled_up(redis_client, settings.stream)  # results may lag by up to ABACUS_ROLLUP_MAX_LAG_MS otherwise
            first = finished(client, admin, client.post("/api/v1/admin/alerts/check", headers=admin))
            assert first["result"]["sent"] >= 1 and first["result"]["failed"] == 0, first["result"]
            again = finished(client, admin, client.post("/api/v1/admin/alerts/check", headers=admin))
            assert again["result"]["sent"] == 0 and again["result"]["events"] == first["result"]["events"]
    finally:
        receiver.server.shutdown()
    events = [json.loads(body) for _, body in receiver.received]
    assert [e["id"] for e in events].count("homepage_hero_test:v1:srm") == 1, events
    srm_headers, srm_body = next((h, b) for h, b in receiver.received if json.loads(b)["kind"] == "sample_ratio_mismatch")
    expected = "sha256=" + hmac.new(b"hook-secret", srm_body, hashlib.sha256).hexdigest()
    assert srm_headers["X-Abacus-Signature"] == expected
    assert srm_headers["X-Abacus-Event-Id"] == "homepage_hero_test:v1:srm"
    assert len(receiver.received) == first["result"]["sent"]  # nothing sent twice


# ----- jobs beside a Redis Cluster -------------------------------------------------------------
@pytest.mark.parametrize("command", ["jobs", "query-api"])
def test_a_cluster_without_a_jobs_redis_is_refused_at_start_in_one_sentence(command: str, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    from abacus.cli import main

    for name in [name for name in __import__("os").environ if name.startswith("ABACUS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("ABACUS_REDIS_URL", "redis://127.0.0.1:1/0")  # never reached: the refusal comes first
    monkeypatch.setenv("ABACUS_CLICKHOUSE_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("ABACUS_JWT_SECRET", "s" * 40)
    monkeypatch.setenv("ABACUS_REDIS_CLUSTER", "true")
    assert main([command]) == 2
    assert capsys.readouterr().err.strip() == (
        "abacus: ABACUS_REDIS_CLUSTER is set, but background jobs (rq) need a plain Redis/Valkey server: "
        "set ABACUS_JOBS_REDIS_URL (e.g. redis://jobs-redis:6379/0)"
    )


def test_on_a_redis_cluster_jobs_queue_on_the_jobs_redis_and_replay_the_clusters_dead_letters(
    settings: Settings, redis_client: redis.Redis, clean_clickhouse: ClickHouse
) -> None:
    import dataclasses

    from redis.cluster import RedisCluster

    from shared.redis_keys import stream_layout
    from tests.valkey_cluster import ValkeyCluster

    cluster = ValkeyCluster(primaries=3, replicas_each=0).start()
    try:
        on_cluster = dataclasses.replace(settings, redis_url=cluster.url, redis_cluster=True, jobs_redis_url=settings.redis_url)
        (shard,) = stream_layout(on_cluster)
        cluster_client = RedisCluster.from_url(cluster.url)
        with serve_client(on_cluster) as client:
            admin = auth(on_cluster)
            cluster_client.xadd(
                shard.dead_letter,
                {
                    **envelope(event("a", event_id="dl-c", session_id="s-c")),
                    b"source_id": b"1-1",
                    b"reason": b"test",
                    b"dead_at_ms": 1,
                },
            )
            done = finished(client, admin, client.post("/api/v1/admin/dead-letters/replay", json={"all": True}, headers=admin))
            assert done["result"]["events"] == 1
            assert redis_client.exists(f"rq:job:{done['id']}") == 1  # rq's state is on the plain Valkey
            assert not cluster_client.keys("rq:*")  # and none of it on the cluster
            wait_for(lambda: count_events(clean_clickhouse) == 1)
        cluster_client.close()
    finally:
        cluster.stop()
