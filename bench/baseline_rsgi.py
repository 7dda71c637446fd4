"""The ingest benchmark's second baseline: a raw RSGI app that reads the body and answers the same
202 body, with no validation and no Redis. `abacus ingest` serves RSGI, so this is the ceiling
on the same interface; ``baseline_asgi`` is the one the throughput target is stated against."""

BODY = b'{"ok":true,"accepted":true}'
HEADERS = [("content-type", "application/json"), ("content-length", str(len(BODY)))]


class App:
    async def __rsgi__(self, scope, protocol):  # type: ignore[no-untyped-def]
        if scope.proto != "http":
            return
        await protocol()
        protocol.response_bytes(202, HEADERS, BODY)


app = App()
