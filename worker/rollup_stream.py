"""What the roller reads from the events stream shards: how far the workers have stored each,
ranges of entries, and the entries they dead-lettered. Its own state (bookmarks, lock, steps) is
the rollup protocol's (shared/rollup/protocol.py)."""

from __future__ import annotations

import redis
from redis.exceptions import ResponseError

from shared.redis_conn import raw_name
from shared.redis_keys import StreamShard
from worker.stream import Entry, acknowledged_below, as_text


class RollupStream:
    def __init__(
        self, client: redis.Redis, stream: str | list[StreamShard], worker_group: str, dead_letter_stream: str = ""
    ) -> None:
        """``stream``: the one untagged stream (with ``dead_letter_stream``), or every stream shard."""
        self.redis = client
        self.streams = [StreamShard(0, 1, stream, dead_letter_stream, "")] if isinstance(stream, str) else stream
        self.stream = self.streams[0].stream
        self.worker_group = worker_group
        self._xrange = raw_name(client, b"XRANGE")

    def stored_until(self, shard: int = 0) -> str | None:
        """An exclusive XRANGE end bound: every entry of stream shard ``shard`` below it was stored
        in ClickHouse (or dead-lettered) by the workers; None while they have no group yet."""
        stream = self.streams[shard].stream
        try:
            groups = self.redis.xinfo_groups(stream)
        except ResponseError:
            return None  # no stream yet
        for group in groups:
            if as_text(group["name"]) == self.worker_group:
                ms, seq = acknowledged_below(self.redis, stream, group)
                return f"({ms}-{seq}"
        return None

    def read_range(self, after: bytes, until: str | bytes, count: int | None, shard: int = 0) -> list[Entry]:
        """Entries after ``after`` up to ``until``; fields as the flat list Redis sent (named in
        bytes, redis-py skips its pure-Python reply parser, which costs more than the fold)."""
        args: list[bytes | str | int] = [self.streams[shard].stream, b"(" + after, until]
        if count is not None:
            args += [b"COUNT", count]
        return self.redis.execute_command(self._xrange, *args) or []

    def dead_letters_after(self, cursor: bytes, shard: int = 0) -> tuple[list[bytes], bytes]:
        """Ids of stream entries dead-lettered after ``cursor`` (workers never stored them), and
        the cursor to continue from."""
        found = []
        while True:
            batch = self.redis.xrange(self.streams[shard].dead_letter, min=b"(" + cursor, count=1000)
            if not batch:
                return found, cursor
            cursor = batch[-1][0]
            found.extend(fields[b"source_id"] for _, fields in batch if fields and b"source_id" in fields)
