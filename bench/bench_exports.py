"""Exports and analyst SQL stream: time and memory of exporting M raw events, through the same
code path as `GET /api/v1/experiments/events` and `POST /api/v1/sql` (query_api.sql_exec).

    .venv/bin/python -m bench.bench_exports [--events 1000000] [--tiny]

M events of one experiment are generated inside a fresh chDB (bench_results_query's generator),
then exported as CSV and as Parquet, and one analyst query streams them back as JSON rows. For each
the export's size, its duration, and the peak of Python's heap while it ran (tracemalloc) and the
process's peak RSS are printed: the heap stays at about one chunk (64 KB) whatever the export's
size, which is what "streamed, never held in memory" means. The baseline is ClickHouse writing the
same rows to /dev/null-like nowhere (`FORMAT Null`): the last line is the CSV export's time over it.
"""

from __future__ import annotations

import argparse
import resource
import secrets
import tempfile
import time
import tracemalloc
from pathlib import Path

from bench.bench_results_query import GENERATE_SQL
from bench.common import machine


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    events = 20_000 if args.tiny else args.events

    from query_api.export_routes import EVENT_COLUMNS
    from query_api.sql_exec import FORMATS, STREAM_SETTINGS, readonly_settings, stream_query
    from shared.clickhouse import ClickHouse, chdb_url, migrate

    with tempfile.TemporaryDirectory() as tmp:
        url = chdb_url(Path(tmp))
        clickhouse = ClickHouse(url)
        migrate(clickhouse.client())
        parameters = {"salt": secrets.randbits(32), "sessions": max(1, events // 5), "rows": events}
        clickhouse.client().command(GENERATE_SQL, parameters=parameters)
        count = (
            clickhouse.client()
            .query("SELECT count() FROM abacus.events FINAL WHERE experiment_key = 'homepage_hero_test'")
            .result_rows[0][0]
        )
        sql = f"SELECT {EVENT_COLUMNS} FROM abacus.events FINAL WHERE experiment_key = 'homepage_hero_test' ORDER BY experiment_key, variant_key, session_id, event_id"
        print(f"machine: {machine()}; {count} events of homepage_hero_test ({events} generated)")

        started = time.perf_counter()
        clickhouse.client().command(sql + " FORMAT Null")
        baseline = time.perf_counter() - started
        print(f"baseline: ClickHouse reads them (FORMAT Null) in {baseline:.2f} s")

        limits = {**STREAM_SETTINGS, "max_execution_time": 600, "max_memory_usage": 4_000_000_000}
        runs = [
            ("events csv", sql, FORMATS["csv"], limits),
            ("events parquet", sql, FORMATS["parquet"], limits),
            ("sql json rows", sql, FORMATS["json"], readonly_settings(600, events * 2, 4_000_000_000)),
        ]
        csv_seconds = None
        for name, query, output, settings in runs:
            tracemalloc.start()
            started = time.perf_counter()
            size = 0
            for chunk in stream_query(url, query, output, settings):
                size += len(chunk)
            seconds = time.perf_counter() - started
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            csv_seconds = seconds if name == "events csv" else csv_seconds
            print(
                f"{name}: {size / 1e6:.1f} MB in {seconds:.2f} s ({size / 1e6 / seconds:.0f} MB/s); "
                f"Python heap peak {peak / 1e6:.2f} MB ({100 * peak / max(size, 1):.2f} % of the export); process RSS peak {peak_rss_mb():.0f} MB"
            )
        clickhouse.close()
    print(f"exports: csv export / ClickHouse read = {csv_seconds / baseline:.2f}x")


if __name__ == "__main__":
    main()
