"""The SDK's own unit tests (Node's built-in runner, `node --test`) as part of the test suite, and
the SDK's size budget. Outside CI a machine without Node skips them; in CI a missing Node fails."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess

import pytest

from tests.conftest import REPO

SDK = REPO / "sdk"
BUDGET_BYTES = 5 * 1024


def node_binary() -> str:
    node = shutil.which("node")
    if node is None:
        message = "node is not installed (Node 20: apt-get install nodejs)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return node


def test_node_unit_tests_pass():
    files = sorted(str(path.relative_to(SDK)) for path in (SDK / "test").glob("*.test.js"))
    assert len(files) >= 2, files
    result = subprocess.run([node_binary(), "--test", *files], cwd=SDK, capture_output=True, text=True, timeout=120)
    summary = [line for line in result.stdout.splitlines() if line.startswith(("# pass", "# fail", "not ok"))]
    assert result.returncode == 0, "\n".join(summary) + "\n" + result.stdout[-4000:] + result.stderr[-2000:]
    assert "# fail 0" in summary and not any(line.startswith("not ok") for line in summary)


def test_sdk_is_within_5_kb_gzipped():
    size = len(gzip.compress((SDK / "abacus.js").read_bytes(), compresslevel=9, mtime=0))
    assert size <= BUDGET_BYTES, f"abacus.js is {size} bytes gzipped, over its {BUDGET_BYTES}-byte budget"


def test_sdk_has_no_dependencies():
    source = (SDK / "abacus.js").read_text()
    assert "require(" not in source and "import " not in source
