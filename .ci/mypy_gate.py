"""mypy on the packages against a committed baseline that may only shrink.

    .venv/bin/python .ci/mypy_gate.py            # fail on any error not in the baseline
    .venv/bin/python .ci/mypy_gate.py --update   # rewrite the baseline (only ever to shrink it)

An error is compared without its line number (file, message, code), so editing a file above an
old error does not count as a new one. A baseline entry no longer reported is dropped by
--update; CI says how many could be.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASELINE = REPO / ".ci" / "mypy-baseline.txt"
PACKAGES = ["abacus", "ingest", "worker", "query_api", "jobs", "shared"]
ERROR = re.compile(r"^(?P<file>[^:]+):\d+: error: (?P<message>.*)$")


def current_errors() -> Counter[str]:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary", "--hide-error-context", *PACKAGES],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if result.returncode not in (0, 1):
        sys.exit(f"mypy itself failed:\n{result.stderr}{result.stdout}")
    found: Counter[str] = Counter()
    for line in result.stdout.splitlines():
        match = ERROR.match(line)
        if match:
            found[f"{match['file']}: {match['message']}"] += 1
    return found


def main() -> int:
    found = current_errors()
    if "--update" in sys.argv:
        BASELINE.write_text("".join(f"{entry}\n" for entry in sorted(found.elements())))
        print(f"mypy baseline: {sum(found.values())} errors")
        return 0
    allowed = Counter(BASELINE.read_text().splitlines()) if BASELINE.exists() else Counter()
    new = found - allowed
    if new:
        print("mypy: errors not in .ci/mypy-baseline.txt (fix them; the baseline may only shrink):")
        for entry in sorted(new.elements()):
            print(f"  {entry}")
        return 1
    fixed = sum((allowed - found).values())
    print(f"mypy: {sum(found.values())} known errors, none new" + (f"; {fixed} fixed (run with --update)" if fixed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
