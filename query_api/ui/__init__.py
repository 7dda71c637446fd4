"""The dashboard under /ui/: plain HTML, CSS and JavaScript shipped as package data, served by
the query API itself (no CDN, so it works offline). It holds no secret: it calls the same API
with the token the person signs in with, which it keeps in sessionStorage."""

from __future__ import annotations

from pathlib import Path

from litestar import Response
from litestar.static_files import create_static_files_router

STATIC_DIR = Path(__file__).resolve().parent / "static"
# Everything the page loads comes from this origin; no inline script, no framing by other sites.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def _security_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


UI_ROUTES = [
    create_static_files_router(
        path="/ui",
        directories=[STATIC_DIR],
        html_mode=True,
        name="dashboard",
        include_in_schema=False,
        after_request=_security_headers,  # type: ignore[arg-type]
    )
]
