"""The directory prometheus_client's multiprocess mode shares between server worker processes.

Apart from shared/prom.py on purpose: prometheus_client chooses how values are kept (in the
process, or in this directory) when it is first imported, so the CLI must set the variable
before anything imports it, and this module imports nothing of it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir() -> Path | None:
    """Before a multi-process server starts: a fresh directory for its processes' values, or the
    operator's own ``PROMETHEUS_MULTIPROC_DIR`` emptied (values of a previous run would add up).
    Returns the directory the caller made, to remove at exit; None when the operator gave one."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
        return None
    made = Path(tempfile.mkdtemp(prefix="abacus-metrics-"))
    os.environ[MULTIPROC_ENV] = str(made)
    return made


def remove_multiprocess_dir(made: Path | None) -> None:
    if made is not None:
        shutil.rmtree(made, ignore_errors=True)
        os.environ.pop(MULTIPROC_ENV, None)
