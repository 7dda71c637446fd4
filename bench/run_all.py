"""Run every benchmark under bench/ in sequence; exit non-zero if any of them fails.

    .venv/bin/python bench/run_all.py [--tiny] [--only NAME[,NAME]]
    .venv/bin/python -m bench.run_all [--tiny]

This is what `./dev bench` and CI run. Each bench/bench_*.py module runs as
`python -m bench.<name>` from the repository root, its output printed as it comes; a summary
with every script's last line (its ratio) follows. --tiny makes each script take a few seconds
(scripts without a --tiny flag get an equivalent: bench_ingest --seconds 1, bench_bot_check
--n 200). bench_ingest runs twice (--mode single and --mode batch) and is skipped, with a line
saying so, when `wrk` is not installed.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Runs per script: each entry is the extra arguments of one run.
RUNS = {"bench_ingest": [["--mode", "single"], ["--mode", "batch"]]}
# What --tiny means for scripts that have no --tiny flag.
TINY = {"bench_ingest": ["--seconds", "1"], "bench_bot_check": ["--n", "200"]}
# Scripts that need a program besides Python: skipped (not failed) when it is missing.
NEEDS = {"bench_ingest": "wrk"}
ORDER = ["bench_ingest", "bench_bot_check", "bench_worker_drain", "bench_rollup", "bench_results_query", "bench_freshness"]


def scripts() -> list[str]:
    found = sorted(p.stem for p in (REPO / "bench").glob("bench_*.py"))
    return [s for s in ORDER if s in found] + [s for s in found if s not in ORDER]


def tiny_args(name: str) -> list[str]:
    if name in TINY:
        return TINY[name]
    source = (REPO / "bench" / f"{name}.py").read_text()
    return ["--tiny"] if '"--tiny"' in source else []


def run_one(args: list[str]) -> tuple[int, str, float]:
    """Run, echoing output live; returns (exit status, last output line, seconds)."""
    started = time.monotonic()
    process = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    last = ""
    assert process.stdout is not None
    for text in process.stdout:
        print(text, end="", flush=True)
        if text.strip():
            last = text.strip()
    return process.wait(), last, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="every script at a size that takes seconds (CI)")
    parser.add_argument("--only", default="", help="comma-separated script names, e.g. bench_freshness")
    args = parser.parse_args()
    only = {name.strip().removesuffix(".py") for name in args.only.split(",") if name.strip()}

    summary: list[tuple[str, str, str, float]] = []
    started = time.monotonic()
    for name in scripts():
        if only and name not in only:
            continue
        for extra in RUNS.get(name, [[]]):
            label = " ".join([name, *extra])
            command = [sys.executable, "-m", f"bench.{name}", *extra, *(tiny_args(name) if args.tiny else [])]
            print(f"\n=== {label}{' (tiny)' if args.tiny else ''}: {' '.join(command[1:])}", flush=True)
            needed = NEEDS.get(name)
            if needed and shutil.which(needed) is None:
                line = f"SKIPPED: `{needed}` is not installed (Debian/Ubuntu: apt-get install {needed})"
                print(line, flush=True)
                summary.append((label, "skip", line, 0.0))
                continue
            status, last, seconds = run_one(command)
            summary.append((label, "ok" if status == 0 else f"FAILED (exit {status})", last, seconds))

    print(f"\n=== summary ({time.monotonic() - started:.0f} s)")
    for label, status, last, seconds in summary:
        print(f"{status:>18}  {label:<34} {seconds:6.1f} s  {last}")
    failed = [label for label, status, _, _ in summary if status.startswith("FAILED")]
    if failed:
        print(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
