"""What pages need from ingest besides the beacon endpoints: the browser SDK itself, server-side
assignments, the visitor cookie set from the server, and (under `abacus ingest`, which has no
query API beside it) the public registry. Served by `abacus ingest` and by `abacus serve` alike.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from importlib import resources
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath
from msgspec import Meta

from ingest import assignment
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
_RETRY_SOON = {"Retry-After": "1"}


class SdkError(msgspec.Struct):
    ok: bool
    error: str
    field: str | None


_BAD_QUERY = ResponseSpec(SdkError, description="A query parameter is missing or invalid; `field` names it")
_NOT_LOADED = ResponseSpec(SdkError, description="The registry is not loaded yet; retry after Retry-After")
_ASSIGNMENT_ERRORS = {400: _BAD_QUERY, 503: _NOT_LOADED}
_VISITOR_ERRORS = {
    400: ResponseSpec(SdkError, description="Malformed JSON or an invalid visitor id or domain; `field` names it"),
    413: ResponseSpec(SdkError, description=f"Body over {_VISITOR_BODY_LIMIT} bytes"),
    415: ResponseSpec(SdkError, description="Content-Type other than application/json or text/plain"),
}


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

    def response(self, request: Request, cache_control: str) -> Response[bytes]:
        headers = {
            "Cache-Control": cache_control,
            "ETag": self.etag,
            "Vary": "Accept-Encoding",
            "Link": f'<{self.versioned_path}>; rel="canonical"',
            # Lets a site's Resource Timing see the transfer size of this cross-origin script.
            "Timing-Allow-Origin": "*",
        }
        if request.headers.get("if-none-match") == self.etag:
            return Response(b"", status_code=304, headers=headers)
        body = self.source
        if accepts_gzip(request.headers.get("accept-encoding", "")):
            body = self.gzipped
            headers["Content-Encoding"] = "gzip"
        return Response(body, media_type="text/javascript", headers=headers)


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


def _bad_request(message: str, field: str | None) -> Response[dict[str, Any]]:
    return Response({"ok": False, "error": message, "field": field}, status_code=400)


def _unavailable() -> Response[dict[str, Any]]:
    body = {"ok": False, "error": "experiment registry not loaded yet", "field": None}
    return Response(body, status_code=503, headers=_RETRY_SOON)


def _validation_error(exc: msgspec.ValidationError) -> Response[dict[str, Any]]:
    message = str(exc)
    found = _FIELD_IN_MESSAGE.search(message)
    return _bad_request(message, found.group(1) if found else None)


def is_secure(request: Request) -> bool:
    """Whether the page is on https: the scheme here, or behind a TLS proxy its header or the
    page's Origin (browsers send Origin with every POST from fetch)."""
    origin = request.headers.get("origin") or ""
    forwarded = request.headers.get("x-forwarded-proto") or ""
    return request.url.scheme == "https" or forwarded.lower() == "https" or origin.startswith("https://")


def sdk_route_handlers(registry: RegistryCache, *, public_registry: bool) -> list:
    """``public_registry``: also answer GET /api/experiments (for `abacus ingest`, where no query API
    serves it on the same origin)."""
    sdk = SdkFile.packaged()

    @get(
        SDK_PATH, tags=["sdk"], summary="The browser SDK (short-lived cache; Link names the versioned URL)", sync_to_thread=False
    )
    def sdk_file(request: Request) -> Response[bytes]:
        return sdk.response(request, SHORT_CACHE)

    @get(
        "/sdk/{name:str}",
        tags=["sdk"],
        summary="The browser SDK at its versioned URL (cached for a year)",
        responses={404: ResponseSpec(None, description="No SDK has that version")},
        sync_to_thread=False,
    )
    def sdk_versioned(request: Request, name: FromPath[str]) -> Response[Any]:
        if f"/sdk/{name}" != sdk.versioned_path:
            return Response({"status_code": 404, "detail": "No such SDK version"}, status_code=404)
        return sdk.response(request, IMMUTABLE_CACHE)

    @get(
        "/api/experiments/assignments",
        tags=["sdk"],
        summary="Server-side assignment: {experiment_key: variant_key}",
        responses=_ASSIGNMENT_ERRORS,
        sync_to_thread=False,
    )
    def server_assignments(request: Request) -> Response[Any]:
        query = {name: request.query_params.get(name) for name in ("visitor_id", "path")}
        missing = [name for name, value in query.items() if value is None]
        if missing:
            return _bad_request(f"Query parameter `{missing[0]}` is required", missing[0])
        try:
            checked = msgspec.convert(query, AssignmentQuery)
        except msgspec.ValidationError as exc:
            return _validation_error(exc)
        snapshot = registry.snapshot
        if snapshot is None:
            return _unavailable()
        chosen = assignment.assignments(snapshot, checked.visitor_id, checked.path, request.cookies)
        # Depends on the visitor and on a registry that changes: never to be cached.
        return Response(chosen, headers={"Cache-Control": "no-store"})

    @post(
        "/api/experiments/visitor",
        tags=["sdk"],
        status_code=204,
        responses=_VISITOR_ERRORS,
        summary="Sets the visitor cookie from the server (Safari keeps it 400 days)",
    )
    async def visitor_cookie(request: Request) -> Response[None]:  # 204; refusals carry a body
        media_type = (request.headers.get("content-type") or "application/json").split(";", 1)[0].strip().lower()
        if media_type not in ("application/json", "text/plain"):
            return Response(
                {"ok": False, "error": "Content-Type must be application/json or text/plain", "field": None}, status_code=415
            )
        body = await request.body()
        if len(body) > _VISITOR_BODY_LIMIT:
            return Response(
                {"ok": False, "error": f"Body larger than {_VISITOR_BODY_LIMIT} bytes", "field": None}, status_code=413
            )
        try:
            wanted = msgspec.json.decode(body, type=VisitorCookieRequest)
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
        return Response(None, status_code=204, cookies=[cookie], headers={"Cache-Control": "no-store"})

    handlers = [sdk_file, sdk_versioned, server_assignments, visitor_cookie]
    if public_registry:

        @get("/api/experiments", tags=["public"], summary="Experiment registry for pages", sync_to_thread=False)
        def registry_for_pages(request: Request) -> Response[Any]:
            snapshot = registry.snapshot
            if snapshot is None:
                return _unavailable()
            return public_registry_response(snapshot, request.headers.get("if-none-match"))

        handlers.append(registry_for_pages)
    return handlers


def public_registry_response(snapshot: RegistrySnapshot, if_none_match: str | None) -> Response[Any]:
    """What the query API answers on GET /api/experiments, from the snapshot ingest holds."""
    etag = f'"g{snapshot.generation}"'
    headers = {"ETag": etag, "Cache-Control": f"public, max-age={PUBLIC_REGISTRY_MAX_AGE_S}"}
    if if_none_match == etag:
        return Response(None, status_code=304, headers=headers)
    body = [e.public() for e in snapshot.active()] if snapshot.settings.experiments_enabled else []
    return Response(body, headers=headers)
