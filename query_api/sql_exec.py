"""Run one query on a ClickHouse connection of its own, with fixed session settings, and stream
its output as bytes.

Why a connection per query: settings applied to the connection (SET on chDB, URL parameters on a
server) are the only ones under which chDB streams its output (per-call settings make it
materialize the whole answer), and with ``readonly = 1`` applied last the query itself cannot
change any of them: ClickHouse refuses writes, DDL, table functions and every ``SETTINGS`` clause.
Opening a chDB connection costs about 16 ms; a server connection is one HTTP pool.

This module is mechanism only: which limits apply is decided by the callers (analyst SQL, exports).
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, DatabaseError, OperationalError

from shared.clickhouse import connect, is_chdb

log = logging.getLogger(__name__)
CHUNK_BYTES = 64 * 1024
# ClickHouse error codes that mean "this query may not do that here", not "the query is wrong".
READONLY_CODES = {164, 497}  # READONLY, ACCESS_DENIED
LIMIT_CODES = {158, 159, 241, 396}  # TOO_MANY_ROWS, TIMEOUT_EXCEEDED, MEMORY_LIMIT_EXCEEDED, TOO_MANY_ROWS_OR_BYTES
_NOT_STREAMABLE = 36  # chDB: "Streaming query is not supported" (statements other than SELECT)
_CODE = re.compile(r"Code: (\d+)")


@dataclass(frozen=True)
class OutputFormat:
    clickhouse: str
    media_type: str  # without a charset: Litestar appends "; charset=utf-8" to text/* itself
    extension: str
    header: str | None = None  # the *WithNames variant, when the streamed one lacks its header


FORMATS = {
    "json": OutputFormat("JSONEachRow", "application/x-ndjson", "ndjson"),
    "csv": OutputFormat("CSV", "text/csv", "csv", header="CSVWithNames"),
    "tsv": OutputFormat("TSV", "text/tab-separated-values", "tsv", header="TSVWithNames"),
    "parquet": OutputFormat("Parquet", "application/vnd.apache.parquet", "parquet"),
}


# Blocks of at most this many rows: chDB hands its output over a block at a time, so this bounds
# what one chunk holds in memory (measured in docs/performance.md, "Exports").
STREAM_SETTINGS = {"max_block_size": 16384}


class QueryFailed(Exception):
    """ClickHouse refused or stopped the query; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def readonly_settings(max_execution_s: int, max_result_rows: int, max_memory_bytes: int) -> dict[str, object]:
    """Limits first, ``readonly`` last: once it is set nothing after it may change a setting."""
    return {
        **STREAM_SETTINGS,
        "max_execution_time": max_execution_s,
        "timeout_overflow_mode": "throw",
        "max_result_rows": max_result_rows,
        "result_overflow_mode": "throw",
        "max_memory_usage": max_memory_bytes,
        "readonly": 1,
    }


def open_connection(url: str, session_settings: dict[str, object]) -> Client:
    client = connect(url)
    try:
        for name, value in session_settings.items():
            client.set_client_setting(name, value)
    except Exception:
        client.close()
        raise
    return client


def classify(exc: Exception) -> QueryFailed:
    code = _code(exc)
    if code is None and isinstance(exc, OperationalError):
        return QueryFailed(503, f"ClickHouse is unavailable: {exc}")
    message = _first_line(str(exc))
    if code in READONLY_CODES:
        return QueryFailed(403, f"Read-only: this query would change data or settings, which SQL here may not. {message}")
    if code in LIMIT_CODES:
        return QueryFailed(422, f"The query was stopped by its limits: {message}")
    return QueryFailed(400, message)


def _code(exc: Exception) -> int | None:
    found = _CODE.search(str(exc))
    return int(found.group(1)) if found else None


def _first_line(text: str) -> str:
    # clickhouse-connect adds the query and a stack trace after ClickHouse's own sentence.
    text = text.strip()
    start = text.find("Code:")
    text = text[start:] if start >= 0 else text
    return text.split("\n", 1)[0][:2000]


def stream_query(
    url: str, sql: str, output: OutputFormat, session_settings: dict[str, object], parameters: dict | None = None
) -> Iterator[bytes]:
    """Open the query and read its first chunk now, so a refusal raises ``QueryFailed`` before
    any byte is sent; the rest is read as the returned iterator is consumed."""
    try:
        client = open_connection(url, session_settings)
    except ClickHouseError as exc:
        raise classify(exc) from None
    try:
        chunks = _open(client, url, sql, output, parameters, bool(session_settings.get("readonly")))
        first = next(chunks, b"")
    except ClickHouseError as exc:
        client.close()
        raise classify(exc) from None
    except BaseException:
        client.close()
        raise
    return _rest(client, first, chunks)


def _rest(client: Client, first: bytes, chunks: Iterator[bytes]) -> Iterator[bytes]:
    try:
        if first:
            yield first
        yield from chunks
    except ClickHouseError as exc:
        # The status line is gone; ending the body early is all that is left (a client sees a
        # truncated chunked answer, never a complete-looking one).
        log.warning("query stopped while streaming: %s", _first_line(str(exc)))
        raise
    finally:
        client.close()


def _open(client: Client, url: str, sql: str, output: OutputFormat, parameters: dict | None, readonly: bool) -> Iterator[bytes]:
    if not is_chdb(url):
        # A server streams every format, headers included.
        return _read_stream(client.raw_stream(sql, parameters=parameters, fmt=output.header or output.clickhouse))
    if output.clickhouse == "Parquet":
        if readonly:
            # INTO OUTFILE is a write; under readonly the answer is built whole, within its row
            # and memory limits.
            return iter([client.raw_query(sql, parameters=parameters, fmt="Parquet")])
        return _parquet_via_file(client, sql, parameters)
    header = b""
    if output.header is not None:
        # chDB streams only formats without a header, so the header line is written here.
        header = _header_line(client, sql, parameters, output)
        if header is None:
            return iter([client.raw_query(sql, parameters=parameters, fmt=output.header)])
    try:
        stream = client.raw_stream(sql, parameters=parameters, fmt=output.clickhouse)
    except DatabaseError as exc:
        if _code(exc) == _NOT_STREAMABLE:
            # SHOW, DESCRIBE, EXPLAIN and refused writes: small or failing, so run them whole.
            return iter([header, client.raw_query(sql, parameters=parameters, fmt=output.header or output.clickhouse)])
        raise
    return _prefixed(header, _read_stream(stream))


def _prefixed(header: bytes, chunks: Iterator[bytes]) -> Iterator[bytes]:
    first = next(chunks, b"")  # a refusal surfaces here, before the header is handed out
    yield header + first
    yield from chunks


def _read_stream(stream) -> Iterator[bytes]:  # type: ignore[no-untyped-def]
    try:
        while chunk := stream.read(CHUNK_BYTES):
            yield chunk
    finally:
        stream.close()


def _header_line(client: Client, sql: str, parameters: dict | None, output: OutputFormat) -> bytes | None:
    try:
        names = [row[0] for row in client.query(f"DESCRIBE TABLE ({sql})", parameters=parameters).result_rows]
    except ClickHouseError:
        return None  # not a plain SELECT: the caller runs it whole with its header format
    if output.clickhouse == "CSV":
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_ALL).writerow(names)  # as ClickHouse's CSVWithNames
        return buffer.getvalue().encode()
    escape = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n"})
    return ("\t".join(name.translate(escape) for name in names) + "\n").encode()


def _parquet_via_file(client: Client, sql: str, parameters: dict | None) -> Iterator[bytes]:
    """chDB cannot stream Parquet (one footer for the whole file): it writes a temporary file,
    which is then sent in chunks and removed, so the answer is never held in memory."""
    fd, name = tempfile.mkstemp(prefix="abacus-export-", suffix=".parquet")
    os.close(fd)
    path = Path(name)
    path.unlink()  # INTO OUTFILE refuses to overwrite
    try:
        quoted = "'" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'"
        client.raw_query(f"{sql} INTO OUTFILE {quoted} FORMAT Parquet", parameters=parameters)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        raise
    return _file_chunks(path)


def _file_chunks(path: Path) -> Iterator[bytes]:
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK_BYTES):
                yield chunk
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
