"""One mapping from Abacus's own errors to HTTP responses, for every query-API route.

Every error answers ingest's shape, ``{"ok": false, "error": "...", "field": "$.path" | null}``,
so a client handles one body whichever service refused it: the 4xx, the 503 of an unavailable
dependency (with Retry-After), and the 500 of anything unexpected (``"internal error"``, its
traceback in the log, never in the body).
"""

from __future__ import annotations

import logging
import re
import time

from clickhouse_connect.driver.exceptions import OperationalError
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from redis.exceptions import RedisError

from query_api.registry_store import Busy, Conflict, NeedsConfirmation, NotArchived, NotFound, RegistryError, VersionMismatch
from shared.registry.models import DefinitionError

_STATUS = {NotFound: 404, Conflict: 409, NeedsConfirmation: 409, NotArchived: 409, VersionMismatch: 412, Busy: 503}
_DETAIL = {
    NotFound: "No experiment {}",
    Conflict: "Experiment {} already exists (archived experiments keep their key)",
    NeedsConfirmation: "{}",
    NotArchived: "{}",
    VersionMismatch: "{}",
    Busy: "{}",
}


log = logging.getLogger(__name__)
_LOG_EVERY_S = 10.0
_last_logged = [0.0]
REDIS_UNAVAILABLE = "Redis unavailable; retry later"
CLICKHOUSE_UNAVAILABLE = "ClickHouse unavailable; retry later"
INTERNAL_ERROR = "internal error"


class BadQuery(ValueError):
    """A query parameter or header the API cannot use; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


_PATH_IN_MESSAGE = re.compile(r" - at `(\$[^`]*)`$")
# A missing or an unknown field is named in the sentence; the path is its object's.
_NAMED_FIELD = re.compile(r"(?:missing required|unknown) field `([^`]*)`")


def error_body(message: str, field: str | None = None) -> dict[str, object]:
    return {"ok": False, "error": message, "field": field}


class SqlRefused(Exception):
    """ClickHouse refused or stopped an analyst's query; ``status`` says how (403 read-only,
    422 past its limits, 400 bad SQL, 503 unavailable)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _registry_error(_: Request, exc: RegistryError) -> Response:
    status = _STATUS.get(type(exc), 500)
    detail = _DETAIL.get(type(exc), "{}").format(exc)
    headers = {"Retry-After": "1"} if status == 503 else None
    return Response(error_body(detail, getattr(exc, "field", None)), status_code=status, headers=headers)


def _field_error(_: Request, exc: DefinitionError | BadQuery) -> Response:
    # DefinitionError ends its text with msgspec's " - at `$.path`"; the path goes in `field`.
    return Response(error_body(_PATH_IN_MESSAGE.sub("", str(exc)), exc.field), status_code=400)


def _http_error(_: Request, exc: HTTPException) -> Response:
    """Litestar's own refusals (auth, 404, a body or parameter it cannot decode) in the same shape;
    a validation error names the first offending value as msgspec's JSON path."""
    message, field = exc.detail, None
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list) and exc.extra:
        first = exc.extra[0] if isinstance(exc.extra[0], dict) else {}
        message = str(first.get("message") or message)
        located = _PATH_IN_MESSAGE.search(message)
        message = _PATH_IN_MESSAGE.sub("", message)
        named = _NAMED_FIELD.search(message)
        key = str(first.get("key") or "")
        if located:
            where = located.group(1)
        elif first.get("source") != "body":
            where = key  # a query parameter or header, by its name
        else:
            # Litestar names a body value by its path without "$.", and the body itself "data".
            where = "$" if key in ("", "data") else key if key.startswith("$") else f"$.{key}"
        field = f"{where}.{named.group(1)}" if named and where.startswith("$") else where or None
    return Response(error_body(message, field), status_code=exc.status_code, headers=exc.headers)


def _redis_unavailable(request: Request, exc: RedisError) -> Response:
    """Redis down or hung (redis-py's timeouts end the wait): a 503 to retry, never a 500; the
    address and exception text go to the log, at most once per interval."""
    now = time.monotonic()
    if now - _last_logged[0] >= _LOG_EVERY_S:
        _last_logged[0] = now
        log.warning("Redis unavailable on %s %s: %r", request.method, request.url.path, exc)
    return Response(error_body(REDIS_UNAVAILABLE), status_code=503, headers={"Retry-After": "1"})


def _clickhouse_unavailable(request: Request, exc: OperationalError) -> Response:
    """ClickHouse unreachable (clickhouse-connect's connection-level error): a 503 to retry."""
    log.warning("ClickHouse unavailable on %s %s: %r", request.method, request.url.path, exc)
    return Response(error_body(CLICKHOUSE_UNAVAILABLE), status_code=503, headers={"Retry-After": "1"})


def _unexpected(request: Request, exc: Exception) -> Response:
    """Anything no handler above answers: a bug, so the traceback goes to the log and the client
    gets the common error shape without internals (Litestar's default would be its own
    ``{"status_code": 500, "detail": ...}``)."""
    log.error("Unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return Response(error_body(INTERNAL_ERROR), status_code=500)


def _sql_refused(_: Request, exc: SqlRefused) -> Response:
    headers = {"Retry-After": "1"} if exc.status == 503 else None
    return Response(error_body(str(exc), "$.query"), status_code=exc.status, headers=headers)


EXCEPTION_HANDLERS = {
    HTTPException: _http_error,
    RegistryError: _registry_error,
    DefinitionError: _field_error,
    BadQuery: _field_error,
    RedisError: _redis_unavailable,
    SqlRefused: _sql_refused,
    OperationalError: _clickhouse_unavailable,
    Exception: _unexpected,
}
