"""The rollup's Redis side: how far workers have stored the stream, the roller's bookmark (a
consumer group it never reads through, so trimming waits for it), and the step in hand."""

from __future__ import annotations

import redis
from redis.exceptions import ResponseError

from shared import redis_keys
from worker.stream import Entry, acknowledged_below, as_text, create_group_at_start


class RollupStream:
    def __init__(self, client: redis.Redis, stream: str, worker_group: str, dead_letter_stream: str) -> None:
        self.redis = client
        self.stream = stream
        self.worker_group = worker_group
        self.dead_letter_stream = dead_letter_stream
        self._dead_cursor = b"0-0"

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

    def bookmark(self) -> bytes | None:
        """The last entry folded into the rollup; None when the rollup was never built here."""
        try:
            groups = self.redis.xinfo_groups(self.stream)
        except ResponseError:
            return None
        for group in groups:
            if as_text(group["name"]) == redis_keys.ROLLUP_GROUP:
                last = group["last-delivered-id"]
                return last if isinstance(last, bytes) else last.encode()
        return None

    def restart_bookmark(self) -> None:
        """Bookmark the start of the stream: from now on no entry is trimmed before the roller read it."""
        if not create_group_at_start(self.redis, self.stream, redis_keys.ROLLUP_GROUP):
            self.redis.xgroup_setid(self.stream, redis_keys.ROLLUP_GROUP, id="0")

    def read_range(self, after: bytes, until: str | bytes, count: int | None) -> list[Entry]:
        """Entries after ``after`` up to ``until``; fields as the flat list Redis sent (named in
        bytes, redis-py skips its pure-Python reply parser, which costs more than the fold)."""
        args: list[bytes | str | int] = [self.stream, b"(" + after, until]
        if count is not None:
            args += [b"COUNT", count]
        return self.redis.execute_command(b"XRANGE", *args) or []

    def step_in_hand(self) -> tuple[bytes, bytes] | None:
        raw = self.redis.get(redis_keys.ROLLUP_STEP)
        if not raw:
            return None
        start, _, end = raw.partition(b" ")
        return start, end

    def begin_step(self, start: bytes, end: bytes) -> None:
        self.redis.set(redis_keys.ROLLUP_STEP, start + b" " + end)

    def finish_step(self, end: bytes) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.xgroup_setid(self.stream, redis_keys.ROLLUP_GROUP, id=end)
        pipe.delete(redis_keys.ROLLUP_STEP)
        pipe.execute()

    def report_behind(self, behind_ms: int) -> None:
        # Expires with the lock's lifetime in mind: a dead roller's last report must not linger.
        self.redis.set(redis_keys.ROLLUP_BEHIND_MS, behind_ms, px=30_000)

    def reread_dead_letters(self) -> None:
        """Start over from the first dead letter (after the bookmark moved back, on a rebuild)."""
        self._dead_cursor = b"0-0"

    def newly_dead_letters(self) -> list[bytes]:
        """Ids of stream entries dead-lettered since the last call: workers never stored them."""
        found = []
        while True:
            batch = self.redis.xrange(self.dead_letter_stream, min=b"(" + self._dead_cursor, count=1000)
            if not batch:
                return found
            self._dead_cursor = batch[-1][0]
            found.extend(fields[b"source_id"] for _, fields in batch if fields and b"source_id" in fields)
