"""One mapping from Abacus's own errors to HTTP responses, for every query-API route."""

from __future__ import annotations

import logging
import time

from litestar import Request, Response
from redis.exceptions import RedisError

from shared.registry.models import DefinitionError
from shared.registry.store import Busy, Conflict, NotFound, RegistryError, VersionMismatch

_STATUS = {NotFound: 404, Conflict: 409, VersionMismatch: 412, Busy: 503}
_DETAIL = {
    NotFound: "No experiment {}",
    Conflict: "Experiment {} already exists (archived experiments keep their key)",
    VersionMismatch: "{}",
    Busy: "{}",
}


log = logging.getLogger(__name__)
_LOG_EVERY_S = 10.0
_last_logged = [0.0]
REDIS_UNAVAILABLE = "Redis unavailable; retry later"


class BadQuery(ValueError):
    """A query parameter or header the API cannot use; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _registry_error(_: Request, exc: RegistryError) -> Response:
    status = _STATUS.get(type(exc), 500)
    detail = _DETAIL.get(type(exc), "{}").format(exc)
    headers = {"Retry-After": "1"} if status == 503 else None
    return Response({"status_code": status, "detail": detail}, status_code=status, headers=headers)


def _field_error(_: Request, exc: DefinitionError | BadQuery) -> Response:
    return Response(
        {"status_code": 400, "detail": str(exc), "field": exc.field, "extra": [{"key": exc.field, "message": str(exc)}]},
        status_code=400,
    )


def _redis_unavailable(request: Request, exc: RedisError) -> Response:
    """Redis down or hung (redis-py's timeouts end the wait): a 503 to retry, never a 500; the
    address and exception text go to the log, at most once per interval."""
    now = time.monotonic()
    if now - _last_logged[0] >= _LOG_EVERY_S:
        _last_logged[0] = now
        log.warning("Redis unavailable on %s %s: %r", request.method, request.url.path, exc)
    return Response({"status_code": 503, "detail": REDIS_UNAVAILABLE}, status_code=503, headers={"Retry-After": "1"})


EXCEPTION_HANDLERS = {
    RegistryError: _registry_error,
    DefinitionError: _field_error,
    BadQuery: _field_error,
    RedisError: _redis_unavailable,
}
