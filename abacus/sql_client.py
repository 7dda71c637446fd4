"""`abacus sql "SELECT …"`: sends the query to `POST /api/v1/sql` of a running query API (or
`abacus serve`, whose chDB no second process can open) and copies the streamed answer to stdout."""

from __future__ import annotations

import json
import shutil
import sys
import urllib.error
import urllib.request
from typing import BinaryIO


class SqlClientError(Exception):
    """The query could not be run; the message is the sentence to print."""


def run_sql(api_url: str, token: str | None, query: str, output_format: str, out: BinaryIO | None = None) -> None:
    if not token:
        raise SqlClientError("no token: pass --token or set ABACUS_TOKEN (mint one with `abacus token --role analyst …`)")
    request = urllib.request.Request(
        api_url.rstrip("/") + "/api/v1/sql",
        data=json.dumps({"query": query, "format": output_format}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as response:  # noqa: S310 - the URL is the user's own setting
            shutil.copyfileobj(response, out or sys.stdout.buffer, 64 * 1024)
    except urllib.error.HTTPError as exc:
        raise SqlClientError(f"{exc.code}: {_error_message(exc.read())}") from None
    except urllib.error.URLError as exc:
        raise SqlClientError(f"cannot reach {api_url} ({exc.reason}); set ABACUS_API_URL or --url") from None


def _error_message(body: bytes) -> str:
    try:
        return str(json.loads(body).get("error") or body.decode(errors="replace"))
    except (ValueError, AttributeError):
        return body.decode(errors="replace")[:500]
