"""The beacon endpoints: parse, run the steps, publish, map the outcome to (status, body, headers).

They bypass Litestar's request/response machinery on purpose: at tens of thousands of beacons
per second per core, building a Request object and resolving dependencies costs more than the
rest of the work. ``BeaconEndpoint.answer`` is the whole endpoint minus the HTTP edges, so the
same logic serves two interfaces: ASGI (``__call__``; reached before Litestar through
``ingest/dispatch.py`` in `abacus serve`, and routed by Litestar too) and RSGI (``ingest/rsgi.py``,
what `abacus ingest` serves).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import msgspec

from ingest.metrics import IngestMetrics
from ingest.publisher import SinkUnavailable, StreamPublisher
from ingest.request import (
    BATCH,
    MAX_REPORTED_ERRORS,
    BadRequest,
    Endpoint,
    ItemError,
    check_media_type,
    declared_length,
    parse_batch,
    parse_beacons,
    read_asgi_body,
)
from ingest.steps import DropReason, EventIds, event_id, now_ms, registry_drop_reason, to_stream_event
from shared.registry.cache import RegistryCache

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]
# Headers of an answer besides content-type and content-length, which each interface adds itself.
# Text, not bytes: RSGI, the interface `abacus ingest` serves, takes and gives headers as text.
Headers = list[tuple[str, str]]
Answer = tuple[int, bytes, Headers]
# (declared Content-Length, limit) -> the whole body, or BadRequest(413) once past the limit.
ReadBody = Callable[[int | None, int], Awaitable[bytes]]

_JSON = (b"content-type", b"application/json")
ACCEPTED_BODY = b'{"ok":true,"accepted":true}'
DROPPED_BODY = b'{"ok":true,"accepted":false}'
# What Litestar's exception middleware answers; the beacon paths, answered before Litestar, say the same.
INTERNAL_ERROR_BODY = b'{"status_code":500,"detail":"Internal Server Error"}'
_NO_HEADERS: Headers = []  # shared by most answers: never appended to
_ALLOW_POST: Headers = [("allow", "POST, OPTIONS")]
_RETRY_SOON: Headers = [("retry-after", "1")]
_json_encoder = msgspec.json.Encoder()


class BatchResult(msgspec.Struct, omit_defaults=True):
    ok: bool
    accepted: int
    rejected: int
    """Dropped beacons (reasons in X-Abacus-Reason) plus invalid ones (listed in ``errors``)."""
    errors: list[ItemError] = []


class BeaconEndpoint:
    def __init__(
        self,
        endpoint: Endpoint,
        publisher: StreamPublisher,
        registry: RegistryCache,
        is_bot: Callable[[str | None], bool],
        metrics: IngestMetrics,
    ) -> None:
        self.endpoint = endpoint
        self._publisher = publisher
        self._registry = registry
        self._is_bot = is_bot
        self._metrics = metrics
        # Made per endpoint when the app is built, never at import: forked server workers then
        # each draw their own random prefix instead of sharing one and generating equal ids.
        self._event_ids = EventIds()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        content_type = content_length = user_agent = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"content-length":
                content_length = value.decode("latin-1")
            elif name == b"user-agent":
                user_agent = value.decode("latin-1")
        status, body, headers = await self.answer(
            scope["method"], content_type, content_length, user_agent, partial(read_asgi_body, receive)
        )
        await respond(send, status, body, [(name.encode(), value.encode("latin-1")) for name, value in headers])

    async def answer(
        self, method: str, content_type: str | None, content_length: str | None, user_agent: str | None, read_body: ReadBody
    ) -> Answer:
        """The endpoint's answer to one request; the body is read only once the headers passed."""
        try:
            answer = await self._answer(method, content_type, content_length, user_agent, read_body)
        except Exception:  # the interface answers 500 (cancellation is no answer, so not counted)
            self._metrics.request(self.endpoint.name, 500)
            raise
        self._metrics.request(self.endpoint.name, answer[0])
        return answer

    async def _answer(
        self, method: str, content_type: str | None, content_length: str | None, user_agent: str | None, read_body: ReadBody
    ) -> Answer:
        if method != "POST":
            if method == "OPTIONS":  # what the Allow header of the 405 promises
                return 204, b"", _ALLOW_POST
            return 405, _error_body("Method not allowed: use POST"), _ALLOW_POST
        try:
            check_media_type(content_type)
            limit = self.endpoint.body_limit
            body = await read_body(declared_length(content_length, limit), limit)
            if self.endpoint is BATCH:
                # Valid items are taken even beside invalid ones: a client library must not lose
                # every event it queued because of one bad one.
                return await self._ingest(*parse_batch(body), user_agent)
            return await self._ingest(parse_beacons(self.endpoint, body), [], user_agent)
        except BadRequest as exc:
            return exc.status, _error_body(exc.message, exc.field), _NO_HEADERS
        except SinkUnavailable as exc:
            # A plain sentence: what failed and where (addresses, exception text) is in the log.
            return 503, _error_body(exc.public), _RETRY_SOON

    async def _ingest(self, beacons: list, invalid: list[ItemError], user_agent: str | None) -> Answer:
        view = self._registry.view
        if view is None:
            # Without a registry ingest cannot tell a real experiment from junk; refusing is
            # safer than guessing, and the client retries.
            raise SinkUnavailable("experiment registry not loaded yet")
        reasons: list[DropReason] = []
        accepted = []
        if self._is_bot(user_agent):
            reasons = [DropReason.BOT] * len(beacons)
        else:
            received_at = now_ms()
            id_prefix = self._event_ids.for_request()
            for index, (beacon, (metadata_json, client_ts_ms)) in enumerate(beacons):
                reason = registry_drop_reason(beacon, view)
                if reason is None:
                    generated_id = event_id(id_prefix, index) if beacon.event_id is None else ""
                    accepted.append(to_stream_event(beacon, metadata_json, client_ts_ms, received_at, generated_id))
                else:
                    reasons.append(reason)
        if accepted:
            await self._publisher.publish(accepted)
            self._metrics.accepted(len(accepted))
        for reason in reasons:
            self._metrics.dropped(reason)
        headers = [("x-abacus-reason", ",".join(sorted({r.value for r in reasons})))] if reasons else _NO_HEADERS
        if self.endpoint is BATCH:
            result = BatchResult(True, len(accepted), len(reasons) + len(invalid), invalid[:MAX_REPORTED_ERRORS])
            return 202, _json_encoder.encode(result), headers
        return 202, ACCEPTED_BODY if accepted else DROPPED_BODY, headers


def _error_body(message: str, field: str | None = None) -> bytes:
    return _json_encoder.encode({"ok": False, "error": message, "field": field})


async def respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    # A 204 has neither a body nor a Content-Length (RFC 9110 8.6).
    all_headers = [_JSON, (b"content-length", str(len(body)).encode())] if status != 204 else []
    if headers:
        all_headers.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})
