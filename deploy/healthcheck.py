"""Container health probe: exit 0 when GET URL answers 2xx within the timeout, else 1.

The slim Python image has neither curl nor wget; docker-compose.yml runs this as
``python deploy/healthcheck.py http://127.0.0.1:8001/readyz``. Standard library only.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: healthcheck.py URL", file=sys.stderr)
        return 2
    try:
        with urllib.request.urlopen(argv[1], timeout=5) as response:
            ok = 200 <= response.status < 300
    except urllib.error.HTTPError as exc:  # /readyz answers 503 with what is wrong
        print(f"{argv[1]}: {exc.code} {exc.read(500).decode('utf-8', 'replace')}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"{argv[1]}: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
