"""Prometheus metrics from every process: `abacus ingest --workers 2` sums its processes (each
scrape, whichever process answers, sees monotonic totals equal to what was sent), the worker's
own port serves its counters, the stream's gauges and health, the query API counts by route and
results source, and `abacus status` reads pending entries and dead letters off a real stream."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from bench.common import free_port, publish_seed_registry
from ingest.metrics import FLUSH_EVERY_S
from shared.clickhouse import ClickHouse
from shared.prom import Metrics
from shared.settings import Settings
from tests.conftest import REPO, count_events, wait_for
from tests.helpers import BROWSER_UA, auth, beacon, serve_client
from tests.test_ingest_rsgi import start, stop
from tests.test_worker import add_many, ensure_group
from worker.main import build_worker, start_ops_server


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture()
def own_db(redis_url: str) -> Iterator[str]:
    url = redis_url.rsplit("/", 1)[0] + "/8"
    client = redis.Redis.from_url(url)
    client.flushdb()
    publish_seed_registry(url)
    yield url
    client.flushdb()
    client.close()


def test_ingest_with_two_worker_processes_scrapes_monotonic_totals_equal_to_what_was_sent(own_db: str) -> None:
    port = free_port()
    env = {"ABACUS_REDIS_URL": own_db, "ABACUS_REGISTRY_POLL_MS": "100"}
    process = start([sys.executable, "-m", "abacus.cli", "ingest", "--workers", "2", "--port", str(port)], env, port, "/readyz")
    base = f"http://127.0.0.1:{port}"
    scraped: list[tuple[float, float]] = []
    sending = threading.Event()
    sending.set()

    def scrape() -> None:
        while sending.is_set():
            # A new connection each time, so scrapes land on either process.
            text = httpx.get(base + "/metrics", headers={"connection": "close"}).text
            scraped.append(
                (value(text, "abacus_ingest_accepted_total"), value(text, "abacus_ingest_dropped_total", reason="bot"))
            )
            time.sleep(0.01)

    sent, bots = 300, 30

    def send(offset: int, count: int) -> None:
        with httpx.Client(base_url=base, headers={"connection": "close", "user-agent": BROWSER_UA}) as client:
            for i in range(offset, offset + count):
                assert client.post("/api/experiments/event", json=beacon(event_id=f"m-{i}")).status_code == 202

    scraper = threading.Thread(target=scrape)
    try:
        scraper.start()
        senders = [threading.Thread(target=send, args=(n * 100, 100)) for n in range(3)]
        for thread in senders:
            thread.start()
        for _ in range(bots):
            httpx.post(
                base + "/api/experiments/event", json=beacon(), headers={"user-agent": "Googlebot/2.1", "connection": "close"}
            )
        for thread in senders:
            thread.join()
        time.sleep(2 * FLUSH_EVERY_S + 0.2)  # the other process adds its counts within one interval
        sending.clear()
        scraper.join()
        finals = []
        for _ in range(10):
            text = httpx.get(base + "/metrics", headers={"connection": "close"}).text
            finals.append(text)
        for text in finals:
            assert value(text, "abacus_ingest_accepted_total") == sent
            assert value(text, "abacus_ingest_dropped_total", reason="bot") == bots
            assert value(text, "abacus_ingest_requests_total", endpoint="event", status="202") == sent + bots
            assert value(text, "abacus_ingest_events_per_xadd_sum") == sent
            assert value(text, "abacus_ingest_publish_seconds_count") >= 1
    finally:
        sending.clear()
        output = stop(process)
    assert len(scraped) > 5
    accepted = [a for a, _ in scraped]
    assert accepted == sorted(accepted), "a scrape saw the accepted total go back"
    assert [b for _, b in scraped] == sorted(b for _, b in scraped)
    assert redis.Redis.from_url(own_db).xlen("abacus:events") >= 1
    assert "Traceback" not in output


@pytest.fixture()
def worker_settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, metrics_port=free_port(), batch_size=50, max_deliveries=1)


def test_a_worker_under_load_serves_its_counters_the_stream_gauges_and_health(
    worker_settings: Settings, redis_client: redis.Redis, clean_clickhouse: ClickHouse
) -> None:
    settings = worker_settings
    ensure_group(redis_client, settings)
    add_many(redis_client, settings, 400)
    redis_client.xadd(settings.stream, {b"e": b"\xc1 not msgpack"})  # poison: dead-lettered at once
    metrics = Metrics()
    worker = build_worker(settings, clean_clickhouse, consumer_name="metrics-test", metrics=metrics)
    ops = start_ops_server(settings, metrics, clean_clickhouse)
    assert ops is not None
    base = f"http://127.0.0.1:{ops.port}"
    before = httpx.get(base + "/metrics").text
    assert value(before, "abacus_stream_length", shard="0") == 401
    assert value(before, "abacus_group_undelivered", group=settings.consumer_group, shard="0") == 401
    assert ("abacus_group_lag_seconds", (("group", settings.consumer_group), ("shard", "0"))) in samples(before)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        add_many(redis_client, settings, 200, start=400)  # more arrives while it works
        wait_for(lambda: count_events(clean_clickhouse) == 600, timeout=30)
        text = wait_for(
            lambda: (t := httpx.get(base + "/metrics").text) and value(t, "abacus_worker_dead_letters_total") == 1 and t
        )
        assert value(text, "abacus_worker_inserted_rows_total") == 600
        assert value(text, "abacus_worker_batch_rows_sum") == 600
        assert value(text, "abacus_worker_batch_rows_count") >= 12  # batches of at most 50 rows
        assert value(text, "abacus_worker_insert_seconds_count") == value(text, "abacus_worker_batch_rows_count")
        assert value(text, "abacus_stream_dead_letters", shard="0") == 1
        wait_for(
            lambda: (
                value(httpx.get(base + "/metrics").text, "abacus_group_pending", group=settings.consumer_group, shard="0") == 0
            )
        )
        assert httpx.get(base + "/healthz").json() == {"status": "ok"}
        ready = httpx.get(base + "/readyz")
        assert ready.status_code == 200 and ready.json()["checks"] == ["clickhouse", "redis"]
        assert httpx.get(base + "/nope").status_code == 404
    finally:
        worker.request_stop()
        thread.join(30)
        ops.stop()
        worker.consumer.redis.close()


def test_readyz_answers_503_in_bounded_time_when_redis_does_not(worker_settings: Settings, clean_clickhouse: ClickHouse) -> None:
    # A listening socket that never answers: a Redis that hangs.
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    settings = dataclasses.replace(worker_settings, redis_url=f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
    ops = start_ops_server(settings, Metrics(), clean_clickhouse)
    assert ops is not None
    try:
        started = time.monotonic()
        answer = httpx.get(f"http://127.0.0.1:{ops.port}/readyz", timeout=10)
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
        assert "redis" in answer.json()["problems"]
        assert time.monotonic() - started < 3.5
        metrics = httpx.get(f"http://127.0.0.1:{ops.port}/metrics", timeout=10).text
        assert value(metrics, "abacus_stream_status_up") == 0
    finally:
        ops.stop()
        silent.close()


def test_the_query_routes_count_latency_by_route_template_and_results_by_source(settings: Settings) -> None:
    with serve_client(settings) as client:
        admin = auth(settings)
        assert client.post("/api/experiments/event", json=beacon(), headers={"user-agent": BROWSER_UA}).status_code == 202
        for _ in range(2):
            assert client.get("/api/v1/experiments/results", headers=admin).status_code == 200
        client.get("/no/such/route")
        text = client.get("/metrics").text
    counted = samples(text)
    by_route = {labels: v for (name, labels), v in counted.items() if name == "abacus_http_request_seconds_count"}
    results = [
        v
        for labels, v in by_route.items()
        if dict(labels)["route"] == "/api/v1/experiments/results" and dict(labels)["status"] == "200"
    ]
    assert results == [2.0], by_route
    assert any(dict(labels)["route"] == "unmatched" and dict(labels)["status"] == "404" for labels in by_route)
    sources = {dict(labels)["source"]: v for (name, labels), v in counted.items() if name == "abacus_results_source_total"}
    assert sum(sources.values()) == 2 and set(sources) <= {"rollup", "events"}
    assert value(text, "abacus_ingest_accepted_total") == 1  # serve: one page for every part


def test_status_prints_pending_per_group_lag_and_dead_letters(settings: Settings, redis_client: redis.Redis) -> None:
    ensure_group(redis_client, settings)
    add_many(redis_client, settings, 5)
    redis_client.xreadgroup(settings.consumer_group, "crashed-worker", {settings.stream: ">"}, count=3)  # 3 pending
    redis_client.xadd(settings.dead_letter_stream, {b"source_id": b"1-0", b"reason": b"test"})
    redis_client.xadd(settings.dead_letter_stream, {b"source_id": b"2-0", b"reason": b"test"})
    redis_client.set("abacus:registry:generation", 7)
    time.sleep(0.05)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABACUS_")} | {"ABACUS_REDIS_URL": settings.redis_url or ""}
    result = subprocess.run(
        [sys.executable, "-m", "abacus.cli", "status"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["stream", settings.stream + ":", "5", "entries"]
    assert lines[1].split()[:3] == ["dead", "letters", "2"]
    assert "generation 7" in lines[2]
    group_line = next(line for line in lines if line.startswith(settings.consumer_group))
    name, consumers, pending, undelivered, lag, role = group_line.split()
    assert (consumers, pending, undelivered, role) == ("1", "3", "2", "workers")
    assert lag.endswith(("ms", "s"))


def test_status_without_redis_or_serve_says_so_in_one_line(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABACUS_")}
    result = subprocess.run(
        [sys.executable, "-m", "abacus.cli", "status", "--data-dir", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and result.stderr.strip() == (
        f"abacus: no ABACUS_REDIS_URL set and no `abacus serve` running on {tmp_path} (its embedded Valkey does not "
        "answer): start serve, give its --data-dir, or set ABACUS_REDIS_URL"
    )


def test_a_scrape_while_another_process_creates_its_value_file_still_answers(tmp_path, monkeypatch) -> None:
    """A process creates its value file and sizes it a moment later (prometheus/client_python
    #1199); a scrape in that moment must still sum the other processes' values, not fail."""
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    from shared.metrics_dir import MULTIPROC_ENV

    written = MmapedDict(str(tmp_path / "counter_101.db"))  # a process that counted 7 beacons
    key = mmap_key("abacus_ingest_accepted", "abacus_ingest_accepted_total", [], [], "Beacons appended to the stream.")
    written.write_value(key, 7.0, 0.0)
    written.close()
    (tmp_path / "counter_102.db").touch()  # the second process, between creating and sizing
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    text = Metrics().render().decode()
    assert value(text, "abacus_ingest_accepted_total") == 7.0
