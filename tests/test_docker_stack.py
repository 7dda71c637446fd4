"""The production topology on real servers in Docker: a ClickHouse server over HTTP and a Redis 7,
as docker-compose.yml runs them, instead of the embedded chDB and Valkey the other tests use.

Every test here needs a Docker engine (testcontainers) and is skipped, with the reason, where none
answers. Two heavier checks are opt-in even with Docker, because they build the image (minutes,
and network access to PyPI):

  ABACUS_TEST_DOCKER_BUILD=1   build ./Dockerfile and run the image: --help, non-root, migrate
  ABACUS_TEST_COMPOSE=1        `docker compose up --wait` the whole docker-compose.yml, send
                               beacons to ingest and read them back from the query API

ABACUS_TEST_CLICKHOUSE_IMAGE and ABACUS_TEST_REDIS_IMAGE override the server images.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.clickhouse import ClickHouse, migrate, migrations
from shared.settings import Settings
from tests.helpers import BROWSER_UA, auth, beacon

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parent.parent
# Keep in step with docker-compose.yml.
CLICKHOUSE_IMAGE = os.environ.get("ABACUS_TEST_CLICKHOUSE_IMAGE", "clickhouse/clickhouse-server:25.8")
REDIS_IMAGE = os.environ.get("ABACUS_TEST_REDIS_IMAGE", "redis:7")
CH_USER, CH_PASSWORD = "abacus", "abacus-test-" + secrets.token_hex(6)
JWT_SECRET = "docker-stack-secret-" + "y" * 40
TABLES = ("abacus.events", "abacus.experiment_versions", "abacus.settings_versions")
EVENT = "/api/experiments/event"
IMPRESSION = "/api/experiments/impression"
BATCH = "/api/experiments/batch"
HERO = "homepage_hero_test"
TREATMENT = "tiny_gang_social_proof"


# ----- servers ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def docker_engine():
    """The Docker SDK client, or a skip naming why no engine answers."""
    docker = pytest.importorskip("docker", reason="the Docker SDK (docker, via testcontainers) is not installed")
    pytest.importorskip("testcontainers", reason="testcontainers is not installed")
    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except Exception as exc:  # DockerException, ConnectionError, a missing socket, ...
        pytest.skip(f"no Docker engine answers ({type(exc).__name__}: {exc})")
    yield client
    client.close()


@pytest.fixture(scope="module")
def clickhouse_container(docker_engine):
    from testcontainers.community.clickhouse import ClickHouseContainer

    container = ClickHouseContainer(CLICKHOUSE_IMAGE, username=CH_USER, password=CH_PASSWORD, dbname="abacus_test")
    container.start()
    yield container
    container.stop()


@pytest.fixture(scope="module")
def clickhouse_url(clickhouse_container) -> str:
    host = clickhouse_container.get_container_host_ip()
    port = clickhouse_container.get_exposed_port(8123)
    return f"http://{CH_USER}:{CH_PASSWORD}@{host}:{port}"


@pytest.fixture(scope="module")
def redis_server_url(docker_engine) -> Iterator[str]:
    from testcontainers.community.redis import RedisContainer

    container = RedisContainer(REDIS_IMAGE)
    container.start()
    host = container.get_container_host_ip()
    port = container.get_exposed_port(6379)
    yield f"redis://{host}:{port}/0"
    container.stop()


@pytest.fixture(scope="module")
def first_migration(clickhouse_url) -> list[str]:
    """What the very first `migrate` against the empty server applied."""
    clickhouse = ClickHouse(clickhouse_url)
    try:
        return migrate(clickhouse.client())
    finally:
        clickhouse.close()


@pytest.fixture()
def server_clickhouse(clickhouse_url, first_migration) -> Iterator[ClickHouse]:
    clickhouse = ClickHouse(clickhouse_url)
    for table in TABLES:
        clickhouse.client().command(f"TRUNCATE TABLE IF EXISTS {table}")
    yield clickhouse
    clickhouse.close()


@pytest.fixture()
def stack_settings(redis_server_url, clickhouse_url, server_clickhouse) -> Iterator[Settings]:
    import redis

    client = redis.Redis.from_url(redis_server_url)
    client.flushdb()
    client.close()
    yield Settings(
        redis_url=redis_server_url,
        clickhouse_url=clickhouse_url,
        jwt_secret=JWT_SECRET,
        registry_seed=REPO / "query_api" / "registry.example.json",
        registry_poll_ms=100,
        batch_wait_ms=100,
        claim_idle_ms=1000,
    )


def count(clickhouse: ClickHouse, where: str = "1") -> int:
    return clickhouse.client().query(f"SELECT count() FROM abacus.events FINAL WHERE {where}").result_rows[0][0]


# ----- migrations ------------------------------------------------------------------------
def test_migrations_apply_on_a_clickhouse_server_and_are_idempotent(clickhouse_url, first_migration):
    expected = [name for _, name, _ in migrations()]
    assert expected, "no migrations found in shared/clickhouse_schema"
    assert first_migration == expected

    clickhouse = ClickHouse(clickhouse_url)
    try:
        client = clickhouse.client()
        assert migrate(client) == []  # second run: nothing left to apply
        again = ClickHouse(clickhouse_url)  # a fresh connection, as a second `abacus migrate` has
        try:
            assert migrate(again.client()) == []
        finally:
            again.close()
        recorded = client.query("SELECT version, name FROM abacus.schema_migrations FINAL ORDER BY version").result_rows
        assert [name for _, name in recorded] == expected
        tables = {row[0] for row in client.query("SHOW TABLES FROM abacus").result_rows}
        assert {"events", "experiment_versions", "settings_versions", "schema_migrations"} <= tables
        engine = client.query("SELECT engine FROM system.tables WHERE database = 'abacus' AND name = 'events'").result_rows
        assert engine == [("ReplacingMergeTree",)]
    finally:
        clickhouse.close()


def test_abacus_migrate_command_against_the_server(clickhouse_url, first_migration, monkeypatch, capsys):
    """What the compose `migrate` service runs, on an already migrated schema."""
    from abacus.cli import main

    monkeypatch.setenv("ABACUS_CLICKHOUSE_URL", clickhouse_url)
    assert main(["migrate"]) == 0
    assert capsys.readouterr().out.strip() == "schema is up to date"


# ----- ingest -> Redis -> worker -> ClickHouse -> query API ------------------------------
def run_worker(settings: Settings, clickhouse_url: str, consumer_name: str | None = None) -> int:
    from worker.main import build_worker

    clickhouse = ClickHouse(clickhouse_url)
    worker = build_worker(settings, clickhouse, consumer_name)
    try:
        worker.run(burst=True)
    finally:
        worker.consumer.redis.close()
        clickhouse.close()
    return worker.inserted_rows


def results_for(query_client, settings: Settings, key: str, role: str = "analyst") -> dict[str, dict]:
    response = query_client.get(f"/api/v1/experiments/results?experiment_key={key}", headers=auth(settings, role, "ana"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert [item["experiment_key"] for item in body] == [key]
    return {variant["variant_key"]: variant for variant in body[0]["variants"]}


COUNT_KEYS = (
    "impressions",
    "cta_clicks",
    "form_starts",
    "form_submits",
    "conversions",
    "unique_sessions",
    "conversion_rate",
    "conversion_value_total",
)


def counts(variant: dict) -> dict:
    return {key: variant[key] for key in COUNT_KEYS}


def test_beacons_flow_from_ingest_through_a_burst_worker_to_results(stack_settings, clickhouse_url, server_clickhouse):
    from litestar.testing import TestClient

    from ingest.app import create_app as create_ingest
    from query_api.app import create_app as create_query

    # The query API first: on its first start it seeds the registry that ingest checks beacons against.
    query_app = create_query(stack_settings)
    ingest_app = create_ingest(stack_settings)
    with (
        TestClient(app=query_app, raise_server_exceptions=False) as query,  # type: ignore[arg-type]
        TestClient(app=ingest_app, raise_server_exceptions=False) as ingest,  # type: ignore[arg-type]
    ):
        ingest.headers["user-agent"] = BROWSER_UA
        # The compose healthchecks probe these.
        assert query.get("/healthz").status_code == 200
        assert query.get("/readyz").status_code == 200, query.get("/readyz").text
        assert ingest.get("/readyz").status_code == 200, ingest.get("/readyz").text

        accepted = {"ok": True, "accepted": True}
        for session in ("s-control-1", "s-control-2"):
            assert ingest.post(IMPRESSION, json=beacon(session_id=session, event_name="impression")).json() == accepted
        assert ingest.post(EVENT, json=beacon(session_id="s-control-1", event_name="cta_click")).json() == accepted
        conversion = beacon(session_id="s-control-1", event_name="conversion", value=12.5, event_id="conv-1")
        assert ingest.post(EVENT, json=conversion).json() == accepted
        assert ingest.post(EVENT, json=conversion).json() == accepted  # a client retry: counted once
        batch = [
            beacon(variant_key=TREATMENT, session_id="s-treat-1", event_name="impression"),
            beacon(variant_key=TREATMENT, session_id="s-treat-1", event_name="form_start"),
            beacon(variant_key=TREATMENT, session_id="s-treat-1", event_name="form_submit"),
            beacon(variant_key=TREATMENT, session_id="s-treat-2", event_name="impression"),
        ]
        assert ingest.post(BATCH, json=batch).status_code == 202
        dropped = ingest.post(EVENT, json=beacon(variant_key="no_such_variant"))
        assert dropped.json() == {"ok": True, "accepted": False}
        bot = ingest.post(EVENT, json=beacon(), headers={"user-agent": "Googlebot/2.1 (+http://www.google.com/bot.html)"})
        assert bot.json() == {"ok": True, "accepted": False}

        assert count(server_clickhouse) == 0  # nothing reaches ClickHouse without a worker
        inserted = run_worker(stack_settings, clickhouse_url)
        assert inserted >= 8  # 8 distinct beacons, plus the retried conversion unless the worker folded it
        assert count(server_clickhouse) == 8

        variants = results_for(query, stack_settings, HERO)
        assert counts(variants["control"]) == {
            "impressions": 2,
            "cta_clicks": 1,
            "form_starts": 0,
            "form_submits": 0,
            "conversions": 1,
            "unique_sessions": 2,
            "conversion_rate": 0.5,
            "conversion_value_total": 12.5,
        }
        assert counts(variants[TREATMENT]) == {
            "impressions": 2,
            "cta_clicks": 0,
            "form_starts": 1,
            "form_submits": 1,
            "conversions": 0,
            "unique_sessions": 2,
            "conversion_rate": 0.0,
            "conversion_value_total": 0.0,
        }
        assert query.get("/api/v1/experiments/results").status_code == 401  # no token, no results

        # A second burst finds the stream drained and inserts nothing more.
        assert run_worker(stack_settings, clickhouse_url) == 0
        assert count(server_clickhouse) == 8


def test_scaled_workers_share_the_stream_and_count_each_beacon_once(stack_settings, clickhouse_url, server_clickhouse):
    """`docker compose up --scale worker=3`: three consumers in one group, each its own name."""
    from litestar.testing import TestClient

    from ingest.app import create_app as create_ingest
    from query_api.app import create_app as create_query

    sessions = 60
    query_app = create_query(stack_settings)
    with (
        TestClient(app=query_app, raise_server_exceptions=False) as query,  # type: ignore[arg-type]
        TestClient(app=create_ingest(stack_settings), raise_server_exceptions=False) as ingest,  # type: ignore[arg-type]
    ):
        ingest.headers["user-agent"] = BROWSER_UA
        for index in range(sessions):
            variant = "control" if index % 2 == 0 else TREATMENT
            body = [
                beacon(variant_key=variant, session_id=f"scaled-{index}", event_name="impression"),
                beacon(variant_key=variant, session_id=f"scaled-{index}", event_name="cta_click"),
            ]
            assert ingest.post(BATCH, json=body).status_code == 202

        inserted: dict[str, int] = {}
        errors: list[BaseException] = []

        def work(name: str) -> None:
            try:
                inserted[name] = run_worker(stack_settings, clickhouse_url, consumer_name=name)
            except BaseException as exc:  # surfaced below, not lost in the thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(f"worker-{n}",)) for n in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors, errors
        assert sum(inserted.values()) >= 2 * sessions
        assert count(server_clickhouse) == 2 * sessions

        variants = results_for(query, stack_settings, HERO, role="admin")
        for variant in ("control", TREATMENT):
            assert variants[variant]["impressions"] == sessions // 2
            assert variants[variant]["cta_clicks"] == sessions // 2
            assert variants[variant]["unique_sessions"] == sessions // 2

        import redis

        client = redis.Redis.from_url(stack_settings.redis_url or "")
        try:
            pending = client.xpending(stack_settings.stream, stack_settings.consumer_group)
            assert pending["pending"] == 0
        finally:
            client.close()


# ----- opt-in: the image and the compose file themselves ----------------------------------
def _docker_cli() -> str:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("the docker CLI is not on PATH")
    return docker


def _run(args: list[str], timeout: float = 900, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=REPO, **kwargs)


@pytest.fixture(scope="module")
def built_image(docker_engine) -> Iterator[str]:
    if os.environ.get("ABACUS_TEST_DOCKER_BUILD") != "1":
        pytest.skip("set ABACUS_TEST_DOCKER_BUILD=1 to build the image (slow, needs PyPI)")
    docker = _docker_cli()
    tag = f"abacus-test:{uuid.uuid4().hex[:12]}"
    build = _run([docker, "build", "--target", "runtime", "--tag", tag, "."], timeout=1800)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    yield tag
    _run([docker, "image", "rm", "--force", tag], timeout=120)


def test_image_runs_as_non_root_with_the_abacus_entrypoint(built_image):
    docker = _docker_cli()
    shown = _run([docker, "run", "--rm", built_image])
    assert shown.returncode == 0, shown.stderr
    for command in ("serve", "ingest", "worker", "query-api", "migrate", "token"):
        assert command in shown.stdout
    uid = _run([docker, "run", "--rm", "--entrypoint", "id", built_image, "-u"])
    assert uid.returncode == 0 and uid.stdout.strip() not in ("", "0"), uid.stdout + uid.stderr
    refused = _run(
        [
            docker,
            "run",
            "--rm",
            "-e",
            "ABACUS_REDIS_URL=redis://nowhere:6379/0",
            "-e",
            "ABACUS_CLICKHOUSE_URL=chdb:///tmp/x",
            built_image,
            "worker",
        ]
    )
    assert refused.returncode == 2 and "cannot use chdb://" in refused.stderr


def test_image_migrates_a_clickhouse_server(built_image, clickhouse_container, first_migration):
    docker = _docker_cli()
    wrapped = clickhouse_container.get_wrapped_container()
    wrapped.reload()
    address = wrapped.attrs["NetworkSettings"]["IPAddress"]
    if not address:  # not on the default bridge network
        address = next(iter(wrapped.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]
    url = f"http://{CH_USER}:{CH_PASSWORD}@{address}:8123"
    migrated = _run([docker, "run", "--rm", "-e", f"ABACUS_CLICKHOUSE_URL={url}", built_image, "migrate"], timeout=300)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert "schema is up to date" in migrated.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _http(method: str, url: str, body: object = None, headers: dict[str, str] | None = None) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"content-type": "application/json", "user-agent": BROWSER_UA, **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def _wait_ready(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, body = _http("GET", url)
        except OSError as exc:  # not listening yet
            status, body = None, exc
        if status == 200:
            return
        assert time.monotonic() < deadline, f"{url} not ready after {timeout}s: {status} {body}"
        time.sleep(1)


def test_compose_stack_end_to_end(docker_engine):
    if os.environ.get("ABACUS_TEST_COMPOSE") != "1":
        pytest.skip("set ABACUS_TEST_COMPOSE=1 to run docker-compose.yml end to end (slow, builds the image)")
    docker = _docker_cli()
    if _run([docker, "compose", "version"], timeout=30).returncode != 0:
        pytest.skip("the docker compose plugin is not installed")
    project = f"abacus-test-{uuid.uuid4().hex[:8]}"
    ingest_port, query_port = _free_port(), _free_port()
    image = f"abacus-test:{project}"
    env = {
        **os.environ,
        "ABACUS_JWT_SECRET": JWT_SECRET,
        "ABACUS_INGEST_PORT": str(ingest_port),
        "ABACUS_QUERY_PORT": str(query_port),
        "ABACUS_IMAGE": image,
        "CLICKHOUSE_PASSWORD": "compose-" + secrets.token_hex(8),
        # Production starts with an empty registry; this test sends beacons for the demo experiments.
        "ABACUS_REGISTRY_SEED": "query_api/registry.example.json",  # the default, read from the installed package
    }
    compose = [docker, "compose", "--project-name", project, "--file", str(REPO / "docker-compose.yml")]
    try:
        # Not `--wait`: older Compose releases mishandle the one-shot migrate service there.
        up = _run([*compose, "up", "--detach", "--build", "--scale", "worker=2"], timeout=1800, env=env)
        assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-4000:]
        ingest, query = f"http://127.0.0.1:{ingest_port}", f"http://127.0.0.1:{query_port}"
        _wait_ready(f"{query}/readyz", timeout=300)
        _wait_ready(f"{ingest}/readyz", timeout=120)

        migrated = _run([*compose, "ps", "--all", "--format", "json", "migrate"], timeout=60, env=env)
        assert migrated.returncode == 0 and '"ExitCode":0' in migrated.stdout.replace(" ", ""), migrated.stdout

        token = _run(
            [*compose, "exec", "-T", "query-api", "abacus", "token", "--sub", "ci@example.com", "--role", "analyst"],
            timeout=60,
            env=env,
        )
        assert token.returncode == 0, token.stderr
        headers = {"authorization": f"Bearer {token.stdout.strip()}"}

        for index in range(4):
            status, body = _http("POST", f"{ingest}{IMPRESSION}", beacon(session_id=f"compose-{index}", event_name="impression"))
            assert (status, body) == (202, {"ok": True, "accepted": True})
        status, body = _http("POST", f"{ingest}{EVENT}", beacon(session_id="compose-0", event_name="conversion", value=5.0))
        assert (status, body) == (202, {"ok": True, "accepted": True})

        deadline = time.monotonic() + 60
        while True:
            status, body = _http("GET", f"{query}/api/v1/experiments/results?experiment_key={HERO}", headers=headers)
            assert status == 200, body
            control = body[0]["variants"][0]  # type: ignore[index]
            if control["impressions"] == 4 and control["conversions"] == 1:
                break
            assert time.monotonic() < deadline, f"the workers did not insert the beacons in time: {control}"
            time.sleep(0.5)
        assert control["unique_sessions"] == 4 and control["conversion_value_total"] == 5.0
    finally:
        logs = _run([*compose, "logs", "--no-color", "--tail", "50"], timeout=120, env=env)
        print(logs.stdout[-8000:])
        _run([*compose, "down", "--volumes", "--remove-orphans"], timeout=300, env=env)
        _run([docker, "image", "rm", "--force", image], timeout=120)
