"""Inserts framed batches into ClickHouse and classifies failures as retryable or not, in one place.

The rows travel as ClickHouse's MsgPack input format: one ``Tuple(...)`` value per event, exactly
the bytes ingest wrote (worker/rows.py), spread into the table's columns on the way in.
A ClickHouse server reads them from the request body through ``input()``; chDB, which has no
request body, from a temporary file through ``file()``, as clickhouse-connect's own chDB inserts do.
"""

from __future__ import annotations

import hashlib
import os
import tempfile

from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from shared.clickhouse import ClickHouse, is_chdb
from shared.event_columns import COLUMN_NAMES, out_of_range, select_list, wire_structure
from worker.rows import Decoded

# ClickHouse errors that pass with time: too many parts, memory, timeouts, read-only replica,
# too many queries, network between replicas, Keeper trouble.
_TRANSIENT_CODES = {159, 164, 202, 209, 210, 241, 242, 252, 285, 319, 425, 999}


class RetryableSinkError(Exception):
    """ClickHouse is unreachable or overloaded: back off and retry the same batch."""


class RejectedBatch(Exception):
    """ClickHouse refused the data itself: retrying the same rows will fail again."""


def dedup_token(decoded: Decoded, scope: bytes = b"") -> str:
    """Same entries, same token: ClickHouse then drops a re-insert of a batch it already stored.

    The hash of every id followed by a comma, hashed in one call. ``scope`` (a stream shard's
    name) comes first: ids of different stream shards may coincide, and a batch of one shard must
    never pass for a re-insert of another's."""
    return hashlib.sha256(scope + b",".join(decoded.ids) + b",").hexdigest()


# Generated from the one definition of the row (shared/event_columns.py). Timestamps come as raw
# epoch milliseconds, unsigned: a value that DateTime64 cannot hold (negative ones included) is
# refused by the range check instead of wrapping around silently.
EVENTS_STRUCTURE = wire_structure("e")
"""The msgpack row of one event, in ``StreamEvent``'s layout: what ingest wrote, and what the
roller sends to abacus.rollup_events (worker/rollup_store.py)."""
_SELECT_ROWS = (
    f"SELECT {select_list('e')} FROM {{source}} WHERE NOT throwIf({out_of_range('e')}, 'timestamp out of DateTime64 range')"
)


class ClickHouseSink:
    def __init__(self, clickhouse: ClickHouse, token_scope: str = "") -> None:
        """``token_scope``: the stream shard's hash tag ("" for the one untagged stream)."""
        self._clickhouse = clickhouse
        self._token_scope = token_scope.encode() + b"\n" if token_scope else b""
        self._insert_into = f"INSERT INTO abacus.events ({', '.join(COLUMN_NAMES)}) "
        self._staging_dir = _staging_dir() if is_chdb(clickhouse.url) else None

    def insert(self, decoded: Decoded, token: str | None = None) -> None:
        """``token``: the deduplication token, when the caller names its batches (the roller
        names its steps); by default one derived from the batch's entry ids."""
        # In the statement, not as client settings: chDB applies those with SET statements before
        # and after the insert, which cost a quarter of the insert's time.
        token = token if token is not None else dedup_token(decoded, self._token_scope)
        insert = f"{self._insert_into}SETTINGS insert_deduplication_token = '{token}', insert_deduplicate = 1 {_SELECT_ROWS}"
        self.insert_msgpack(insert, EVENTS_STRUCTURE, decoded.rows_msgpack())

    def insert_msgpack(self, insert: str, structure: str, rows: bytes) -> None:
        """Run ``insert`` (an INSERT ... SELECT reading ``{source}``) over msgpack ``rows`` of the
        given structure; failures classified as retryable or rejected."""
        try:
            client = self._clickhouse.client()
            if is_chdb(self._clickhouse.url):
                self._insert_through_file(client, insert, rows, structure)
            else:
                source = f"input('{structure}')"
                client.command(insert.format(source=source) + " FORMAT MsgPack", data=rows)
        except OperationalError as exc:
            raise RetryableSinkError(str(exc)) from exc
        except DatabaseError as exc:
            if _error_code(exc) in _TRANSIENT_CODES:
                raise RetryableSinkError(str(exc)) from exc
            raise RejectedBatch(str(exc)) from exc
        except (ConnectionError, TimeoutError) as exc:
            raise RetryableSinkError(str(exc)) from exc

    def _insert_through_file(self, client, insert: str, rows: bytes, structure: str) -> None:  # noqa: ANN001
        descriptor, path = tempfile.mkstemp(prefix="abacus-batch-", suffix=".msgpack", dir=self._staging_dir)
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(rows)
            source = f"file({_sql_string(path)}, 'MsgPack', '{structure}')"
            client.command(insert.format(source=source))
        except OSError as exc:
            # The temporary directory is full or unwritable: nothing reached ClickHouse, and it may pass.
            raise RetryableSinkError(f"cannot stage the batch for chDB: {exc}") from exc
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass


def _staging_dir() -> str:
    """Where batches for chDB are written. ``file()`` reads its path as a glob, and a pattern that
    matches nothing reads no rows without an error: a batch would be acknowledged unstored. So a
    temporary directory spelled with glob characters is refused when the sink is built."""
    directory = tempfile.gettempdir()
    if any(char in directory for char in "*?{}"):
        raise ValueError(
            f"the temporary directory {directory!r} contains *, ?, {{ or }}, which chDB's file() reads as a "
            "glob pattern; point TMPDIR at a plain path"
        )
    return directory


def _sql_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _error_code(exc: DatabaseError) -> int | None:
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    text = str(exc)
    marker = "Code: "
    if marker in text:
        digits = text.split(marker, 1)[1].split(".", 1)[0].strip()
        if digits.isdigit():
            return int(digits)
    return None
