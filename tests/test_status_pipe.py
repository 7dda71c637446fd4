"""`abacus status` into a pipe whose reader stops early (`| head -1`): the command ends quietly,
with no false "Redis does not answer: Broken pipe"."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO


def _env(redis_url: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ABACUS_")}
    # Many shards: many screens, so writes keep coming after the reader is gone.
    return clean | {"ABACUS_REDIS_URL": redis_url, "ABACUS_STREAM_SHARDS": "40"}


def test_status_piped_to_head_prints_its_first_line_and_no_error(redis_url, redis_client):
    result = subprocess.run(
        f"{sys.executable} -m abacus.cli status | head -1; exit ${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        cwd=REPO,
        env=_env(redis_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.startswith("stream ") and result.stdout.count("\n") == 1
    assert "Redis does not answer" not in result.stderr and "Broken pipe" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr


def test_status_into_a_pipe_closed_before_it_writes_ends_with_0_and_says_nothing(redis_url, redis_client):
    process = subprocess.Popen(
        [sys.executable, "-m", "abacus.cli", "status"],
        cwd=REPO,
        env=_env(redis_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    process.stdout.close()  # the reader is gone before the first line is written
    _, stderr = process.communicate(timeout=60)
    assert stderr == "" and process.returncode == 0, stderr


def test_status_still_reports_a_redis_that_does_not_answer():
    from bench.common import free_port

    result = subprocess.run(
        [sys.executable, "-m", "abacus.cli", "status"],
        cwd=REPO,
        env=_env(f"redis://127.0.0.1:{free_port()}/0"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "Redis does not answer" in result.stderr
