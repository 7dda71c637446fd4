"""First stage of the hot path: turn an HTTP request into validated beacons, or a 4xx naming why.

Decoders are built once per endpoint; msgspec validates while it parses, so a valid beacon
costs one pass over the body.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from shared.wire import (
    MAX_BATCH_ITEMS,
    Beacon,
    BeaconRuleError,
    ConversionValue,
    EventId,
    ExperimentKey,
    MetadataValue,
    PagePath,
    SessionId,
    check_beacon_rules,
)

SINGLE_BODY_LIMIT = 64 * 1024
BATCH_BODY_LIMIT = 1024 * 1024
_ACCEPTED_MEDIA_TYPES = ("application/json", "text/plain")
# What bytes.strip() removes: the header arrives as text, and str.strip() would also remove
# Unicode spaces such as a non-breaking space, accepting a media type that is not one.
_ASCII_WHITESPACE = " \t\n\r\x0b\x0c"
_FIELD_IN_MESSAGE = re.compile(r" - at `([^`]*)`$")
_MISSING_FIELD = re.compile(r"missing required field `([^`]*)`")
# Where each item of a batch is, for error messages: made once, not formatted per beacon.
_BATCH_ITEM_PATHS = tuple(f"$[{index}]" for index in range(MAX_BATCH_ITEMS))


class ImpressionBeacon(msgspec.Struct, frozen=True):
    """The impression endpoint's beacon: event_name may be left out, and may only be "impression"."""

    experiment_key: ExperimentKey
    variant_key: ExperimentKey
    session_id: SessionId
    path: PagePath
    event_name: Literal["impression"] = "impression"
    timestamp: datetime | None = None
    metadata: Annotated[dict[str, MetadataValue], Meta(max_length=32)] | None = None
    value: ConversionValue | None = None
    event_id: EventId | None = None


class BadRequest(Exception):
    """A request ingest refuses; ``status`` is the HTTP status, ``field`` the JSON path if known."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


class Endpoint:
    """One ingest route: how big its body may be and how it decodes into beacons."""

    def __init__(self, name: str, body_limit: int, decode: Callable[[bytes], list[Beacon]]) -> None:
        self.name = name
        self.body_limit = body_limit
        self.decode = decode


def _decode_event(body: bytes, _decoder: msgspec.json.Decoder = msgspec.json.Decoder(Beacon)) -> list[Beacon]:
    return [_decoder.decode(body)]


def _decode_impression(
    body: bytes,
    _decoder: msgspec.json.Decoder = msgspec.json.Decoder(ImpressionBeacon),
) -> list[Beacon]:
    # Same field types and constraints as Beacon, so the copy needs no second validation.
    return [Beacon(**msgspec.structs.asdict(_decoder.decode(body)))]


def _decode_batch(
    body: bytes,
    _decoder: msgspec.json.Decoder = msgspec.json.Decoder(Annotated[list[Beacon], Meta(max_length=MAX_BATCH_ITEMS)]),
) -> list[Beacon]:
    return _decoder.decode(body)


EVENT = Endpoint("event", SINGLE_BODY_LIMIT, _decode_event)
IMPRESSION = Endpoint("impression", SINGLE_BODY_LIMIT, _decode_impression)
BATCH = Endpoint("batch", BATCH_BODY_LIMIT, _decode_batch)


def check_media_type(content_type: str | None) -> None:
    # sendBeacon posts text/plain so the browser skips a CORS preflight; a missing type is
    # taken as JSON because the body is parsed as JSON either way.
    if content_type is None:
        return
    media_type = content_type.split(";", 1)[0].strip(_ASCII_WHITESPACE).lower()
    if media_type not in _ACCEPTED_MEDIA_TYPES:
        raise BadRequest(415, "Content-Type must be application/json or text/plain")


def declared_length(content_length: str | None, limit: int) -> int | None:
    """The Content-Length as a number; one over the limit is refused before any body is read."""
    if content_length is None:
        return None
    try:
        length = int(content_length)
    except ValueError:
        raise BadRequest(400, "Invalid Content-Length header") from None
    if length > limit:
        raise too_large(limit)
    return length


def too_large(limit: int) -> BadRequest:
    return BadRequest(413, f"Body larger than {limit} bytes")


async def read_asgi_body(receive: Callable[[], Awaitable[dict]], declared_length: int | None, limit: int) -> bytes:
    """The body from ASGI messages. ``declared_length`` was checked already; the limit is applied
    to what arrives whatever was declared."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest(400, "Client disconnected before the body was complete")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _require_text(body: bytes) -> None:
    if not body.strip():
        raise BadRequest(400, "Empty body: expected a JSON beacon")
    try:
        # msgspec checks the UTF-8 of the fields it decodes but skips unknown ones unread; the
        # same bytes must not be refused in one place and stored in another.
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(400, f"Body is not valid UTF-8 (byte {exc.start})") from None


def parse_beacons(endpoint: Endpoint, body: bytes) -> list[tuple[Beacon, tuple[str, int | None]]]:
    """Each valid beacon with its metadata already encoded as JSON and its client timestamp in
    epoch milliseconds."""
    _require_text(body)
    try:
        beacons = endpoint.decode(body)
    except msgspec.ValidationError as exc:
        raise _bad(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise BadRequest(400, f"Malformed JSON: {exc}") from None
    single = endpoint is not BATCH
    parsed = []
    for index, beacon in enumerate(beacons):
        try:
            parsed.append((beacon, check_beacon_rules(beacon, "$" if single else _BATCH_ITEM_PATHS[index])))
        except BeaconRuleError as exc:
            raise BadRequest(400, str(exc), exc.field) from None
    return parsed


class ItemError(msgspec.Struct):
    """Why one item of a batch was refused; ``field`` is its JSON path, such as ``$[3].session_id``."""

    index: int
    error: str
    field: str | None


MAX_REPORTED_ERRORS = 20
"""A batch answer lists at most this many invalid items (its ``rejected`` counts them all)."""


def parse_batch(
    body: bytes,
    _items: msgspec.json.Decoder = msgspec.json.Decoder(Annotated[list[msgspec.Raw], Meta(max_length=MAX_BATCH_ITEMS)]),
    _item: msgspec.json.Decoder = msgspec.json.Decoder(Beacon),
) -> tuple[list[tuple[Beacon, tuple[str, int | None]]], list[ItemError]]:
    """The valid beacons of a batch (as ``parse_beacons``) and an error per invalid item. Only a
    body that is not a JSON array of at most 500 objects is refused whole."""
    _require_text(body)
    errors: list[ItemError] = []
    try:
        decoded = list(enumerate(_decode_batch(body)))  # every item valid: one pass, the common case
    except msgspec.DecodeError as exc:
        if not isinstance(exc, msgspec.ValidationError):
            raise BadRequest(400, f"Malformed JSON: {exc}") from None
        try:
            raw_items = _items.decode(body)
        except msgspec.ValidationError as whole:
            raise _bad(str(whole)) from None
        decoded = []
        for index, raw in enumerate(raw_items):
            if bytes(memoryview(raw)[:1]) != b"{":
                raise BadRequest(400, "Expected an array of objects", _BATCH_ITEM_PATHS[index]) from None
            try:
                decoded.append((index, _item.decode(raw)))
            except msgspec.ValidationError as item_exc:
                refused = _bad(str(item_exc))
                errors.append(_item_error(index, refused.message, refused.field))
    parsed = []
    for index, beacon in decoded:
        try:
            parsed.append((beacon, check_beacon_rules(beacon, _BATCH_ITEM_PATHS[index])))
        except BeaconRuleError as exc:
            errors.append(ItemError(index, str(exc).rsplit(" - at `", 1)[0], exc.field))
    errors.sort(key=lambda error: error.index)
    return parsed, errors


def _item_error(index: int, message: str, field: str | None) -> ItemError:
    # The item was decoded alone, so msgspec's paths start at it: "$.x" becomes "$[index].x".
    where = _BATCH_ITEM_PATHS[index]
    text = _FIELD_IN_MESSAGE.sub("", message)
    return ItemError(index, text, where + field[1:] if field else where)


def _bad(message: str) -> BadRequest:
    """msgspec says where a value is wrong ("- at `$.path`"); for a missing field it names the
    field and, when nested, the object that lacks it."""
    located = _FIELD_IN_MESSAGE.search(message)
    where = located.group(1) if located else "$"
    missing = _MISSING_FIELD.search(message)
    if missing:
        return BadRequest(400, message, f"{where}.{missing.group(1)}")
    return BadRequest(400, message, where if located else None)
