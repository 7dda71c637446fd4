"""The site the SDK's browser tests visit: a tiny HTTP server on 127.0.0.1 whose pages load
abacus.js from a real `abacus serve` on another origin, as a site loads it from its ingest.

Pages: ``/`` (the seed registry's homepage_hero_test, its two heroes marked for no-code use),
``/e/<key>`` (an experiment a test creates, variants ``control`` and ``treatment`` marked), and
``/plain`` (no SDK at all: where a visitor goes when leaving). Every SDK page has a ``#buy`` button
that records a conversion and a ``#buy-and-leave`` link that records one and navigates to /plain.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

SDK_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<script src="{serve}/sdk/abacus.js"></script>
<script>window.abacusReady = Abacus.init({{endpoint: "{serve}"}});</script>
</head><body>
{marked}
<button id="buy" onclick="Abacus.track('conversion', {{value: 12.5}})">Buy</button>
<a id="buy-and-leave" href="/plain" onclick="Abacus.track('conversion', {{value: 5}})">Buy and leave</a>
</body></html>
"""
PLAIN_PAGE = "<!doctype html><html><head><title>plain</title></head><body>No SDK here.</body></html>"


def marked(key: str, variants: tuple[str, ...]) -> str:
    return "\n".join(f'<p data-abacus-experiment="{key}" data-abacus-variant="{v}">{key}: {v}</p>' for v in variants)


class SitePages:
    """Serves the pages; ``serve_url`` is set once the serve they talk to is up."""

    def __init__(self) -> None:
        self.serve_url = ""
        pages = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = pages.page(urlsplit(self.path).path).encode()
                self.send_response(200)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.send_header("content-length", str(len(body)))
                self.send_header("cache-control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="site-pages", daemon=True)
        self._thread.start()

    def page(self, path: str) -> str:
        if path.startswith("/plain"):
            return PLAIN_PAGE
        if path.startswith("/e/"):
            key = path.split("/")[2]
            return SDK_PAGE.format(title=key, serve=self.serve_url, marked=marked(key, ("control", "treatment")))
        hero = marked("homepage_hero_test", ("control", "tiny_gang_social_proof"))
        return SDK_PAGE.format(title="home", serve=self.serve_url, marked=hero)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
