"""Inserts decoded batches into ClickHouse and classifies failures as retryable or not, in one place."""

from __future__ import annotations

import hashlib

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
    """Same entries, same token: ClickHouse then drops a re-insert of a batch it already stored."""
    digest = hashlib.sha256()
    for entry_id in decoded.ids:
        digest.update(entry_id)
        digest.update(b",")
    return digest.hexdigest()


class ClickHouseSink:
    def __init__(self, clickhouse: ClickHouse, table: str = "abacus.events") -> None:
        self._clickhouse = clickhouse
        self._table = table

    def insert(self, decoded: Decoded) -> None:
        try:
            self._clickhouse.client().insert(
                self._table,
                decoded.columns,
                column_names=COLUMNS,
                column_oriented=True,
                settings={"insert_deduplication_token": dedup_token(decoded), "insert_deduplicate": 1},
            )
        except OperationalError as exc:
            raise RetryableSinkError(str(exc)) from exc
        except DatabaseError as exc:
            if _error_code(exc) in _TRANSIENT_CODES:
                raise RetryableSinkError(str(exc)) from exc
            raise RejectedBatch(str(exc)) from exc
        except (ConnectionError, TimeoutError) as exc:
            raise RetryableSinkError(str(exc)) from exc
        except (TypeError, ValueError, OverflowError, KeyError) as exc:
            raise RejectedBatch(f"rows could not be serialized: {exc!r}") from exc


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
