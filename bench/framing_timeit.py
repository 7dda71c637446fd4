"""Micro-benchmark of the worker's framing (worker/rows.py): timeit of ``decode_entries`` plus
``rows_msgpack`` over 100k ingest-shaped entries, at 1 and 15 events per entry. Usage, from the
repository root:

    .venv/bin/python bench/framing_timeit.py [--against GIT_REV] [--entries 100000] [--repeat 9]

With ``--against``, that revision's worker/rows.py is timed in the same process, alternating
with the current one, so both see the same machine load. Not run by bench/run_all.py (it is not
a ``bench_*`` module): it has no baseline outside the code, only a before/after.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import timeit
from pathlib import Path
from types import ModuleType

import msgspec

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from shared.wire import StreamEnvelope, StreamEvent  # noqa: E402


def _event(i: int) -> StreamEvent:
    return StreamEvent(
        f"ev-{i}", "homepage_hero_test", "control", f"session_{i}", "impression", "/", None, "{}", None, 1_780_000_000_123
    )


def _module_at(revision: str) -> ModuleType:
    source = subprocess.run(["git", "show", f"{revision}:worker/rows.py"], cwd=REPO, check=True, capture_output=True).stdout
    path = Path(tempfile.mkdtemp()) / "rows_before.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("rows_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--against", help="git revision whose worker/rows.py to compare with")
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    import worker.rows as current

    variants = {"current": current}
    if args.against:
        variants[args.against] = _module_at(args.against)
    for per_entry in (1, 15):
        raw = msgspec.msgpack.encode(StreamEnvelope(events=[_event(i) for i in range(per_entry)]))
        entries = [(f"1-{i}".encode(), [b"e", raw]) for i in range(args.entries)]
        best = {name: float("inf") for name in variants}
        for _ in range(args.repeat):  # alternate, so a burst of load hits both
            for name, module in variants.items():
                seconds = timeit.timeit(lambda m=module: m.decode_entries(entries).rows_msgpack(), number=1)
                best[name] = min(best[name], seconds)
        for name, seconds in best.items():
            print(
                f"{per_entry:2d} events/entry  {name:>10}: {seconds / args.entries * 1e6:.3f} µs per entry (best of {args.repeat})"
            )


if __name__ == "__main__":
    main()
