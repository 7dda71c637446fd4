"""What the roller reads from the events stream shards: how far the workers have stored each,
ranges of entries, and the entries they dead-lettered. Its own state (bookmarks, lock, steps) is
the rollup protocol's (shared/rollup/protocol.py)."""

from __future__ import annotations

from collections.abc import Generator

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

    def read_chunks(
        self, after: bytes, until: str | bytes, count: int | None, chunk: int, shard: int = 0
    ) -> Generator[list[Entry], None, None]:
        """Up to ``count`` entries (every one when None) after ``after`` up to ``until``, in
        replies of up to ``chunk`` entries. Each next reply is asked for before the caller gets
        the one in hand, on the same connection: Valkey builds it (about a third of a read's
        cost, docs/performance.md) while the caller folds. A cluster client reads one at a time."""
        if not isinstance(self.redis, redis.Redis):  # a cluster client has no one connection to ask on
            yield from self._chunks_in_turn(after, until, count, chunk, shard)
            return
        pool = self.redis.connection_pool
        stream = self.streams[shard].stream
        connection = pool.get_connection()
        asked = False
        try:
            want = chunk if count is None else min(chunk, count)
            connection.send_command(self._xrange, stream, b"(" + after, until, b"COUNT", want)
            asked, read = True, 0
            while asked:
                entries = connection.read_response() or []
                asked = False
                read += len(entries)
                if len(entries) == want and (count is None or read < count):
                    want = chunk if count is None else min(chunk, count - read)
                    connection.send_command(self._xrange, stream, b"(" + entries[-1][0], until, b"COUNT", want)
                    asked = True
                if entries:
                    yield entries
        finally:
            if asked:  # a reply is still on its way: the connection cannot be reused
                connection.disconnect()
            pool.release(connection)

    def _chunks_in_turn(
        self, after: bytes, until: str | bytes, count: int | None, chunk: int, shard: int
    ) -> Generator[list[Entry], None, None]:
        read = 0
        while count is None or read < count:
            want = chunk if count is None else min(chunk, count - read)
            entries = self.read_range(after, until, want, shard)
            if entries:
                yield entries
            if len(entries) < want:
                return
            read += len(entries)
            after = entries[-1][0]

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
