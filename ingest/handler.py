"""The beacon endpoints: parse, run the steps, publish, map the outcome to (status, body, headers).

They bypass any framework's request/response machinery on purpose: at tens of thousands of
beacons per second per core, building a Request object and resolving dependencies costs more
than the rest of the work. Each is a handler of ``ingest.edge``, served over RSGI by `abacus
ingest` and over ASGI by `abacus serve` through that module's adapters.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from ingest.edge import JSON, Answer, Request, error_body
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
)
from ingest.steps import DropReason, EventIds, event_id, now_ms, registry_drop_reason, to_stream_event
from shared.registry.cache import RegistryCache

ACCEPTED_BODY = b'{"ok":true,"accepted":true}'
DROPPED_BODY = b'{"ok":true,"accepted":false}'
_RETRY_SOON = [*JSON, ("retry-after", "1")]
_json_encoder = msgspec.json.Encoder()


class BatchResult(msgspec.Struct, omit_defaults=True):
    ok: bool
    accepted: int
    rejected: int
    """Dropped beacons (reasons in X-Abacus-Reason) plus invalid ones (listed in ``errors``)."""
    errors: list[ItemError] = []


class BeaconEndpoint:
    """One beacon path's POST handler (``ingest.edge.Handler``)."""

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

    async def __call__(self, request: Request) -> Answer:
        """The endpoint's answer to one POST; the body is read only once the headers passed."""
        try:
            answer = await self._answer(request)
        except Exception:  # the edge answers 500 (cancellation is no answer, so not counted)
            self._metrics.request(self.endpoint.name, 500)
            raise
        self._metrics.request(self.endpoint.name, answer[0])
        return answer

    async def _answer(self, request: Request) -> Answer:
        try:
            check_media_type(request.content_type)
            limit = self.endpoint.body_limit
            body = await request.read_body(declared_length(request.headers.get("content-length"), limit), limit)
            user_agent = request.headers.get("user-agent")
            if self.endpoint is BATCH:
                # Valid items are taken even beside invalid ones: a client library must not lose
                # every event it queued because of one bad one.
                return await self._ingest(*parse_batch(body), user_agent)
            return await self._ingest(parse_beacons(self.endpoint, body), [], user_agent)
        except BadRequest as exc:
            return exc.status, error_body(exc.message, exc.field), JSON
        except SinkUnavailable as exc:
            # A plain sentence: what failed and where (addresses, exception text) is in the log.
            return 503, error_body(exc.public), _RETRY_SOON

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
        headers = [*JSON, ("x-abacus-reason", ",".join(sorted({r.value for r in reasons})))] if reasons else JSON
        if self.endpoint is BATCH:
            result = BatchResult(True, len(accepted), len(reasons) + len(invalid), invalid[:MAX_REPORTED_ERRORS])
            return 202, _json_encoder.encode(result), headers
        return 202, ACCEPTED_BODY if accepted else DROPPED_BODY, headers
