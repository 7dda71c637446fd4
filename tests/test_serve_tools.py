"""`abacus serve` beside the tools an analyst or admin runs on the same machine: the token hint,
`abacus migrate` on the data dir serve holds, and `abacus sql` through serve's API."""

from __future__ import annotations

import os
import subprocess
import sys

import jwt

from tests.conftest import REPO
from tests.live_serve import LiveServe, serve_output


def abacus(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ABACUS_")}
    return subprocess.run(
        [sys.executable, "-m", "abacus.cli", *args], cwd=REPO, env=clean | env, capture_output=True, text=True, timeout=120
    )


def test_hint_works_as_typed_once_migrate_refuses_in_a_sentence_and_sql_goes_through_serve(tmp_path):
    data_dir = tmp_path / "data"
    serve = LiveServe(data_dir)
    try:
        migrate = abacus("migrate", "--data-dir", str(data_dir))
        assert migrate.returncode == 2
        assert migrate.stderr.count("\n") == 1 and "`abacus serve` is running on" in migrate.stderr
        assert "Traceback" not in migrate.stderr

        token = serve.token("analyst")
        ran = abacus(
            "sql",
            "SELECT experiment_key FROM abacus.experiment_versions FINAL ORDER BY experiment_key",
            "--format",
            "csv",
            ABACUS_TOKEN=token,
            ABACUS_API_URL=serve.base_url,
        )
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.splitlines() == ['"experiment_key"', '"homepage_hero_test"', '"pricing_cta_test"']
        refused = abacus("sql", "DROP TABLE abacus.events", "--token", token, "--url", serve.base_url)
        assert refused.returncode == 2 and "403" in refused.stderr and "Read-only" in refused.stderr
    finally:
        assert serve.stop() == 0
    first_output = serve_output(serve.process)
    hint = next(line.strip() for line in first_output.splitlines() if " token " in line and "--role admin" in line)
    # The hint is a command line that runs as printed, from where serve was started.
    minted = subprocess.run(
        hint,
        shell=True,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("ABACUS_")},
    )
    assert minted.returncode == 0, minted.stderr
    secret = (data_dir / "jwt-secret").read_text().strip()
    assert jwt.decode(minted.stdout.strip(), secret, algorithms=["HS256"])["role"] == "admin"

    again = LiveServe(data_dir)
    assert again.stop() == 0
    assert "mint a token" not in serve_output(again.process)


def test_status_reads_the_embedded_valkey_of_a_running_serve_and_says_when_none_runs(tmp_path):
    data_dir = tmp_path / "data"
    serve = LiveServe(data_dir)
    try:
        status = abacus("status", "--data-dir", str(data_dir))
        assert status.returncode == 0, status.stderr
        assert status.stdout.splitlines()[0].startswith("stream        abacus:events: ")
        assert any(line.startswith("abacus-workers ") for line in status.stdout.splitlines()), status.stdout
        assert "generation" in status.stdout and "never published" not in status.stdout  # serve seeded the registry
        password = (data_dir / "valkey-password").read_text().strip()
        assert password not in status.stdout + status.stderr
    finally:
        assert serve.stop() == 0
    stopped = abacus("status", "--data-dir", str(data_dir))
    assert stopped.returncode == 2 and stopped.stderr.count("\n") == 1
    assert f"no `abacus serve` running on {data_dir}" in stopped.stderr
