"""Inserts decoded batches into ClickHouse and classifies failures as retryable or not, in one place."""

from __future__ import annotations

import hashlib

from clickhouse_connect.datatypes.base import ClickHouseType
from clickhouse_connect.datatypes.registry import get_from_name
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from shared.clickhouse import ClickHouse
from worker.rows import COLUMNS, Decoded

# ClickHouse errors that pass with time: too many parts, memory, timeouts, read-only replica,
# too many queries, network between replicas, Keeper trouble.
_TRANSIENT_CODES = {159, 164, 202, 209, 210, 241, 242, 252, 285, 319, 425, 999}


class RetryableSinkError(Exception):
    """ClickHouse is unreachable or overloaded: back off and retry the same batch."""


class RejectedBatch(Exception):
    """ClickHouse refused the data itself: retrying the same rows will fail again."""


def dedup_token(decoded: Decoded) -> str:
    """Same entries, same token: ClickHouse then drops a re-insert of a batch it already stored.

    The hash of every id followed by a comma, hashed in one call; a worker of an earlier version
    hashed the same bytes id by id, so a batch it left in flight keeps its token after an upgrade."""
    return hashlib.sha256(b",".join(decoded.ids) + b",").hexdigest()


class ClickHouseSink:
    def __init__(self, clickhouse: ClickHouse, table: str = "abacus.events") -> None:
        self._clickhouse = clickhouse
        self._table = table
        self._column_types: list[ClickHouseType] | None = None

    def insert(self, decoded: Decoded) -> None:
        try:
            client = self._clickhouse.client()
            if self._column_types is None:
                self._column_types = _insert_types(client, self._table)
            client.insert(
                self._table,
                decoded.columns,
                column_names=COLUMNS,
                column_types=self._column_types,
                column_oriented=True,
                settings={"insert_deduplication_token": dedup_token(decoded), "insert_deduplicate": 1},
            )
        except OperationalError as exc:
            raise RetryableSinkError(str(exc)) from exc
        except DatabaseError as exc:
            if _error_code(exc) in _TRANSIENT_CODES:
                raise RetryableSinkError(str(exc)) from exc
            self._column_types = None  # the table may have changed under us: ask again next time
            raise RejectedBatch(str(exc)) from exc
        except (ConnectionError, TimeoutError) as exc:
            raise RetryableSinkError(str(exc)) from exc
        except (TypeError, ValueError, OverflowError, KeyError) as exc:
            raise RejectedBatch(f"rows could not be serialized: {exc!r}") from exc


def _insert_types(client: Client, table: str) -> list[ClickHouseType]:
    """The table's column types, asked for once instead of before every insert, with
    LowCardinality columns sent as their plain type: clickhouse-connect builds a LowCardinality
    dictionary in a Python loop per column, ClickHouse converts a plain column on insert in C++."""
    types = client.create_insert_context(table, COLUMNS).column_types
    return [get_from_name(t.name[len("LowCardinality(") : -1]) if t.low_card else t for t in types]


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
