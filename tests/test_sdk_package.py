"""A built wheel carries abacus.js as package data and serves those bytes (not the checkout's)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO


def uv_binary() -> str:
    found = shutil.which("uv") or next((str(p) for p in [REPO / ".tools" / "bin" / "uv"] if p.exists()), None)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("uv is not installed (./dev installs it into .tools/)")
        pytest.skip("uv is not installed (./dev installs it into .tools/)")
    return found


def test_wheel_ships_the_sdk_and_serves_it_from_package_data(tmp_path: Path):
    built = subprocess.run(
        [uv_binary(), "build", "--wheel", "--out-dir", str(tmp_path / "dist")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (tmp_path / "dist").glob("abacus-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert archive.read("sdk/abacus.js") == (REPO / "sdk" / "abacus.js").read_bytes()
        archive.extractall(tmp_path / "site")
    assert "ingest/sdk_routes.py" in names and "ingest/assignment.py" in names
    assert not any(name.startswith("sdk/test/") for name in names)
    # The wheel's packages first on the path, from a directory that is not the checkout.
    probe = (
        "import sdk, ingest.sdk_routes as routes; from ingest.sdk_routes import SdkFile; "
        "packaged = SdkFile.packaged(); print(sdk.__file__); print(routes.__file__); "
        "print(len(packaged.source)); print(packaged.versioned_path)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABACUS_")} | {"PYTHONPATH": str(tmp_path / "site")}
    ran = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    sdk_file, module_file, size, versioned = ran.stdout.split()
    assert Path(sdk_file).is_relative_to(tmp_path / "site") and Path(module_file).is_relative_to(tmp_path / "site")
    assert int(size) == len((REPO / "sdk" / "abacus.js").read_bytes())
    assert versioned.startswith("/sdk/abacus.") and versioned.endswith(".js")
