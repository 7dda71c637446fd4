"""`abacus worker`: one consumer of the stream, as its own process. Never imports Litestar."""

from __future__ import annotations

import logging
import signal

from shared.clickhouse import ClickHouse
from shared.redis_conn import sync_client
from shared.settings import Settings
from worker.loop import Worker
from worker.sink import ClickHouseSink
from worker.stream import StreamConsumer

log = logging.getLogger(__name__)


def build_worker(settings: Settings, clickhouse: ClickHouse, consumer_name: str | None = None) -> Worker:
    assert settings.redis_url, "the worker needs a Redis URL"
    # The socket timeout must outlast the longest blocking read (batch_wait) by a margin.
    client = sync_client(settings.redis_url, socket_timeout=settings.batch_wait_ms / 1000 + 10)
    consumer = StreamConsumer(
        client,
        settings.stream,
        settings.consumer_group,
        consumer_name or settings.worker_name,
        settings.dead_letter_stream,
    )
    return Worker(
        consumer,
        ClickHouseSink(clickhouse),
        batch_size=settings.batch_size,
        batch_wait_ms=settings.batch_wait_ms,
        max_deliveries=settings.max_deliveries,
        claim_idle_ms=settings.claim_idle_ms,
    )


def run_worker_process(settings: Settings, burst: bool = False) -> int:
    clickhouse = ClickHouse(settings.clickhouse_url or "")
    worker = build_worker(settings, clickhouse)

    def on_signal(signum: int, _frame: object) -> None:
        if worker.stopping.is_set():
            raise SystemExit(128 + signum)  # second signal: stop now, entries stay pending
        log.info("signal %d: finishing the batch in hand, then stopping", signum)
        worker.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("worker %s reading %s as group %s", worker.consumer.consumer, settings.stream, settings.consumer_group)
    try:
        worker.run(burst=burst)
    finally:
        worker.consumer.redis.close()
        clickhouse.close()
    log.info("worker stopped after inserting %d rows", worker.inserted_rows)
    return 0
