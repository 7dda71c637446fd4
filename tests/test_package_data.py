"""The built wheel carries the ClickHouse migrations and the registry seed, and the installed code
finds them through importlib.resources: build it (``uv build --wheel``), install it without its
dependencies into a fresh venv, offline, and run the code from there, away from the checkout."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from query_api.registry_seed import EXAMPLE_SEED
from shared.settings import Settings

REPO = Path(__file__).resolve().parent.parent


def _uv() -> str:
    for candidate in (REPO / ".tools" / "bin" / "uv", shutil.which("uv")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.skip("uv is neither in .tools/bin (./dev installs it there) nor on the PATH: cannot build the wheel")


def _run(*command: str, cwd: Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300, **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Python of a fresh venv holding only the wheel."""
    uv, work = _uv(), tmp_path_factory.mktemp("wheel")
    # --offline: hatchling comes from uv's cache (./dev's sync built the project with it).
    _run(uv, "build", "--wheel", "--offline", "--out-dir", str(work / "dist"), cwd=REPO)
    [wheel] = (work / "dist").glob("abacus-*.whl")
    _run(uv, "venv", "--offline", "--python", sys.executable, str(work / "venv"), cwd=work)
    python = work / "venv" / "bin" / "python"
    _run(uv, "pip", "install", "--offline", "--no-deps", "--python", str(python), str(wheel), cwd=work)
    return python


_PROBE = """
import json, sys
import query_api.registry_seed as seed, shared.clickhouse as ch
print(json.dumps({
    "files": [ch.__file__, seed.__file__],
    "migrations": [[name, len(statements)] for _, name, statements in ch.migrations()],
    "sql": {item.name: item.read_text() for item in ch.migration_files()},
    "seed": [e.experiment_key for e in seed.load_seed(seed.find_seed(seed.EXAMPLE_SEED)).experiments],
}))
"""


def test_the_installed_wheel_reads_its_migrations_and_seed_from_the_package(installed: Path, tmp_path: Path):
    # The packages come from the fresh venv; their dependencies (no .pth is read from PYTHONPATH,
    # so not the checkout) from the test environment's site-packages. Run from an empty
    # directory, so neither the checkout nor a relative seed path can be found by accident.
    env = {"PYTHONPATH": sysconfig.get_paths()["purelib"], "PATH": "/usr/bin:/bin"}
    answer = json.loads(_run(str(installed), "-c", _PROBE, cwd=tmp_path, env=env).stdout)
    venv = installed.parent.parent
    assert all(Path(file).is_relative_to(venv) for file in answer["files"]), answer["files"]

    shipped = sorted(path.name for path in (REPO / "shared" / "clickhouse_schema").glob("*.sql"))
    assert [name for name, _ in answer["migrations"]] == shipped and len(shipped) >= 5
    assert all(count > 0 for _, count in answer["migrations"])
    assert answer["sql"] == {name: (REPO / "shared" / "clickhouse_schema" / name).read_text() for name in shipped}
    in_repo = json.loads((REPO / "query_api" / "registry.example.json").read_text())
    assert answer["seed"] == [experiment["experiment_key"] for experiment in in_repo["experiments"]] != []


def test_the_seed_setting_defaults_to_the_shipped_example():
    assert Settings().registry_seed == EXAMPLE_SEED
