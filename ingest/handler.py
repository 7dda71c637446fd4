"""The beacon endpoints as plain ASGI callables: parse, run the steps, publish, map the outcome.

They bypass Litestar's request/response machinery on purpose: at tens of thousands of beacons
per second per core, building a Request object and resolving dependencies costs more than the
rest of the work. In `abacus ingest` and `abacus serve` they are reached before Litestar (``ingest/dispatch.py``);
Litestar routes to them too (``@asgi`` handlers) and serves everything else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from ingest.publisher import SinkUnavailable, StreamPublisher
from ingest.request import BATCH, BadRequest, Endpoint, check_media_type, parse_beacons, read_body
from ingest.steps import DropCounter, DropReason, EventIds, event_id, now_ms, registry_drop_reason, to_stream_event
from shared.registry.cache import RegistryCache

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

_JSON = (b"content-type", b"application/json")
ACCEPTED_BODY = b'{"ok":true,"accepted":true}'
DROPPED_BODY = b'{"ok":true,"accepted":false}'
_json_encoder = msgspec.json.Encoder()


class BatchResult(msgspec.Struct):
    ok: bool
    accepted: int
    rejected: int


class BeaconEndpoint:
    def __init__(
        self,
        endpoint: Endpoint,
        publisher: StreamPublisher,
        registry: RegistryCache,
        is_bot: Callable[[str | None], bool],
        counter: DropCounter,
    ) -> None:
        self.endpoint = endpoint
        self._publisher = publisher
        self._registry = registry
        self._is_bot = is_bot
        self._counter = counter
        # Made per endpoint when the app is built, never at import: forked server workers then
        # each draw their own random prefix instead of sharing one and generating equal ids.
        self._event_ids = EventIds()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await respond(send, 405, _error_body("Method not allowed: use POST"), [(b"allow", b"POST, OPTIONS")])
            return
        content_type = content_length = user_agent = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                content_length = value
            elif name == b"user-agent":
                user_agent = value
        try:
            check_media_type(content_type)
            length = _int_or_none(content_length)
            body = await read_body(receive, length, self.endpoint.body_limit)
            beacons = parse_beacons(self.endpoint, body)
            status, payload, headers = await self._ingest(beacons, user_agent)
        except BadRequest as exc:
            await respond(send, exc.status, _error_body(exc.message, exc.field))
            return
        except SinkUnavailable as exc:
            await respond(send, 503, _error_body(str(exc)), [(b"retry-after", b"1")])
            return
        await respond(send, status, payload, headers)

    async def _ingest(self, beacons: list, user_agent: bytes | None) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        view = self._registry.view
        if view is None:
            # Without a registry ingest cannot tell a real experiment from junk; refusing is
            # safer than guessing, and the client retries.
            raise SinkUnavailable("experiment registry not loaded yet")
        reasons: list[DropReason] = []
        accepted = []
        if self._is_bot(user_agent.decode("latin-1") if user_agent is not None else None):
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
            self._counter.accepted += len(accepted)
        for reason in reasons:
            self._counter.drop(reason)
        headers = [(b"x-abacus-reason", ",".join(sorted({r.value for r in reasons})).encode())] if reasons else []
        if self.endpoint is BATCH:
            return 202, _json_encoder.encode(BatchResult(True, len(accepted), len(reasons))), headers
        return 202, ACCEPTED_BODY if accepted else DROPPED_BODY, headers


def _int_or_none(raw: bytes | None) -> int | None:
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(400, "Invalid Content-Length header") from None


def _error_body(message: str, field: str | None = None) -> bytes:
    return _json_encoder.encode({"ok": False, "error": message, "field": field})


async def respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    all_headers = [_JSON, (b"content-length", str(len(body)).encode())]
    if headers:
        all_headers.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})
