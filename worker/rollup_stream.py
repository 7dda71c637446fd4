"""What the roller reads from the events stream: how far the workers have stored it, ranges of
entries, and the entries they dead-lettered. Its own state (bookmark, lock, step) is the rollup
protocol's (shared/rollup/protocol.py)."""

from __future__ import annotations

import redis
from redis.exceptions import ResponseError

from worker.stream import Entry, acknowledged_below, as_text


class RollupStream:
    def __init__(self, client: redis.Redis, stream: str, worker_group: str, dead_letter_stream: str) -> None:
        self.redis = client
        self.stream = stream
        self.worker_group = worker_group
        self.dead_letter_stream = dead_letter_stream

    def stored_until(self) -> str | None:
        """An exclusive XRANGE end bound: every entry below it was stored in ClickHouse (or
        dead-lettered) by the workers; None while they have no group yet."""
        try:
            groups = self.redis.xinfo_groups(self.stream)
        except ResponseError:
            return None  # no stream yet
        for group in groups:
            if as_text(group["name"]) == self.worker_group:
                ms, seq = acknowledged_below(self.redis, self.stream, group)
                return f"({ms}-{seq}"
        return None

    def read_range(self, after: bytes, until: str | bytes, count: int | None) -> list[Entry]:
        """Entries after ``after`` up to ``until``; fields as the flat list Redis sent (named in
        bytes, redis-py skips its pure-Python reply parser, which costs more than the fold)."""
        args: list[bytes | str | int] = [self.stream, b"(" + after, until]
        if count is not None:
            args += [b"COUNT", count]
        return self.redis.execute_command(b"XRANGE", *args) or []

    def dead_letters_after(self, cursor: bytes) -> tuple[list[bytes], bytes]:
        """Ids of stream entries dead-lettered after ``cursor`` (workers never stored them), and
        the cursor to continue from."""
        found = []
        while True:
            batch = self.redis.xrange(self.dead_letter_stream, min=b"(" + cursor, count=1000)
            if not batch:
                return found, cursor
            cursor = batch[-1][0]
            found.extend(fields[b"source_id"] for _, fields in batch if fields and b"source_id" in fields)
