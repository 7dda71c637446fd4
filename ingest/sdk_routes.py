"""What pages need from ingest besides the beacon endpoints: the browser SDK itself, server-side
assignments, the visitor cookie set from the server, and (under `abacus ingest`, which has no
query API beside it) the public registry. Served by `abacus ingest` and by `abacus serve` alike.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from importlib import resources
from typing import Annotated
from urllib.parse import parse_qsl

import msgspec
from litestar.datastructures import Cookie
from msgspec import Meta

from ingest import assignment
from ingest.edge import JSON, Answer, Methods, Request, error_body
from ingest.request import BadRequest, declared_length
from shared.registry.cache import RegistryCache
from shared.registry.models import RegistrySnapshot
from shared.wire import PagePath, SessionId

SDK_PATH = "/sdk/abacus.js"
VISITOR_COOKIE = "abacus_id"
VISITOR_COOKIE_MAX_AGE_S = 400 * 24 * 3600  # the longest browsers keep a cookie (RFC 6265bis)
# The unversioned URL may change under a page, so caches keep it briefly; a versioned URL names
# one content forever.
SHORT_CACHE = "public, max-age=300"
IMMUTABLE_CACHE = "public, max-age=31536000, immutable"
PUBLIC_REGISTRY_MAX_AGE_S = 5  # as the query API's GET /api/experiments
_VISITOR_BODY_LIMIT = 1024
_FIELD_IN_MESSAGE = re.compile(r" - at `\$\.([^`]*)`$")
_encoder = msgspec.json.Encoder()


class SdkFile:
    """``abacus.js`` as served: its bytes, gzipped once, and the versioned path named by its digest."""

    def __init__(self, source: bytes) -> None:
        self.source = source
        self.gzipped = gzip.compress(source, compresslevel=9, mtime=0)
        digest = hashlib.sha256(source).hexdigest()[:12]
        self.versioned_path = f"/sdk/abacus.{digest}.js"
        self.etag = f'"{digest}"'

    @classmethod
    def packaged(cls) -> SdkFile:
        # Package data, so a built wheel serves the same file as a checkout.
        return cls(resources.files("sdk").joinpath("abacus.js").read_bytes())

    def answer(self, request: Request, cache_control: str) -> Answer:
        headers = [
            ("cache-control", cache_control),
            ("etag", self.etag),
            ("vary", "Accept-Encoding"),
            ("link", f'<{self.versioned_path}>; rel="canonical"'),
            # Lets a site's Resource Timing see the transfer size of this cross-origin script.
            ("timing-allow-origin", "*"),
        ]
        if request.headers.get("if-none-match") == self.etag:
            return 304, b"", headers
        headers.append(("content-type", "text/javascript; charset=utf-8"))
        if accepts_gzip(request.headers.get("accept-encoding") or ""):
            return 200, self.gzipped, [*headers, ("content-encoding", "gzip")]
        return 200, self.source, headers


def accepts_gzip(accept_encoding: str) -> bool:
    for item in accept_encoding.lower().split(","):
        name, _, params = item.strip().partition(";")
        if name.strip() in ("gzip", "*"):
            quality = params.strip().removeprefix("q=")
            return not re.fullmatch(r"0(\.0*)?", quality)
    return False


class VisitorCookieRequest(msgspec.Struct, frozen=True):
    visitor_id: SessionId
    domain: Annotated[str, Meta(pattern=r"^\.?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$", max_length=253)] | None = None


class AssignmentQuery(msgspec.Struct, frozen=True):
    visitor_id: SessionId
    path: PagePath


_NO_STORE = ("cache-control", "no-store")


def _json(status: int, value: object, *headers: tuple[str, str]) -> Answer:
    return status, _encoder.encode(value), [*JSON, *headers]


def _bad_request(message: str, field: str | None) -> Answer:
    return 400, error_body(message, field), JSON


def _unavailable() -> Answer:
    return 503, error_body("experiment registry not loaded yet"), [*JSON, ("retry-after", "1")]


def _validation_error(exc: msgspec.ValidationError) -> Answer:
    message = str(exc)
    found = _FIELD_IN_MESSAGE.search(message)
    return _bad_request(message, found.group(1) if found else None)


def is_secure(request: Request) -> bool:
    """Whether the page is on https: the scheme here, or behind a TLS proxy its header or the
    page's Origin (browsers send Origin with every POST from fetch)."""
    origin = request.headers.get("origin") or ""
    forwarded = request.headers.get("x-forwarded-proto") or ""
    return request.scheme == "https" or forwarded.lower() == "https" or origin.startswith("https://")


class SdkRoutes:
    """The SDK's routes, as ``ingest.edge`` handlers. ``public_registry``: also answer GET
    /api/experiments (for `abacus ingest`, where no query API serves it on the same origin)."""

    def __init__(self, registry: RegistryCache, *, public_registry: bool) -> None:
        self._registry = registry
        self._sdk = SdkFile.packaged()
        self.routes: dict[str, Methods] = {
            SDK_PATH: {"GET": self.sdk_file},
            "/api/experiments/assignments": {"GET": self.server_assignments},
            "/api/experiments/visitor": {"POST": self.visitor_cookie},
        }
        if public_registry:
            self.routes["/api/experiments"] = {"GET": self.registry_for_pages}
        self.prefixes: dict[str, Methods] = {"/sdk/": {"GET": self.sdk_versioned}}

    async def sdk_file(self, request: Request) -> Answer:
        return self._sdk.answer(request, SHORT_CACHE)

    async def sdk_versioned(self, request: Request) -> Answer:
        if request.path != self._sdk.versioned_path:
            return 404, error_body("No such SDK version"), JSON
        return self._sdk.answer(request, IMMUTABLE_CACHE)

    async def server_assignments(self, request: Request) -> Answer:
        params = dict(parse_qsl(request.query, keep_blank_values=True)[::-1])  # the first of each name wins
        query = {name: params.get(name) for name in ("visitor_id", "path")}
        missing = [name for name, value in query.items() if value is None]
        if missing:
            return _bad_request(f"Query parameter `{missing[0]}` is required", missing[0])
        try:
            checked = msgspec.convert(query, AssignmentQuery)
        except msgspec.ValidationError as exc:
            return _validation_error(exc)
        snapshot = self._registry.snapshot
        if snapshot is None:
            return _unavailable()
        chosen = assignment.assignments(snapshot, checked.visitor_id, checked.path, request.cookies())
        # Depends on the visitor and on a registry that changes: never to be cached.
        return _json(200, chosen, _NO_STORE)

    async def visitor_cookie(self, request: Request) -> Answer:  # 204; refusals carry a body
        media_type = (request.content_type or "application/json").split(";", 1)[0].strip().lower()
        if media_type not in ("application/json", "text/plain"):
            return 415, error_body("Content-Type must be application/json or text/plain"), JSON
        try:
            body = await request.read_body(
                declared_length(request.headers.get("content-length"), _VISITOR_BODY_LIMIT), _VISITOR_BODY_LIMIT
            )
            wanted = msgspec.json.decode(body, type=VisitorCookieRequest)
        except BadRequest as exc:
            return exc.status, error_body(exc.message, exc.field), JSON
        except msgspec.ValidationError as exc:
            return _validation_error(exc)
        except msgspec.DecodeError as exc:
            return _bad_request(f"Malformed JSON: {exc}", None)
        cookie = Cookie(
            key=VISITOR_COOKIE,
            value=wanted.visitor_id,
            max_age=VISITOR_COOKIE_MAX_AGE_S,
            path="/",
            domain=wanted.domain,
            secure=is_secure(request) or None,
            httponly=False,  # the SDK reads it, like the cookie it sets itself
            samesite="lax",
        )
        return 204, b"", [("set-cookie", cookie.to_header(header="")), _NO_STORE]

    async def registry_for_pages(self, request: Request) -> Answer:
        snapshot = self._registry.snapshot
        if snapshot is None:
            return _unavailable()
        return public_registry_answer(snapshot, request.headers.get("if-none-match"))


def public_registry_answer(snapshot: RegistrySnapshot, if_none_match: str | None) -> Answer:
    """What the query API answers on GET /api/experiments, from the snapshot ingest holds."""
    etag = f'"g{snapshot.generation}"'
    headers = [("etag", etag), ("cache-control", f"public, max-age={PUBLIC_REGISTRY_MAX_AGE_S}")]
    if if_none_match == etag:
        return 304, b"", headers
    body = [e.public() for e in snapshot.active()] if snapshot.settings.experiments_enabled else []
    return _json(200, body, *headers)
