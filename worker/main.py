"""`abacus worker`: one consumer of the stream, as its own process. Never imports Litestar."""

from __future__ import annotations

import gc
import logging
import signal
import threading

from shared.clickhouse import ClickHouse
from shared.ops_http import OpsServer
from shared.prom import Metrics
from shared.redis_conn import sync_client
from shared.rollup.protocol import RollupProtocol
from shared.settings import Settings
from worker.loop import Worker
from worker.metrics import RollerMetrics, WorkerMetrics
from worker.rollup import Roller
from worker.rollup_stream import RollupStream
from worker.sink import ClickHouseSink
from worker.stream import StreamConsumer

log = logging.getLogger(__name__)


def build_worker(
    settings: Settings, clickhouse: ClickHouse, consumer_name: str | None = None, metrics: Metrics | None = None
) -> Worker:
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
        metrics=WorkerMetrics(metrics),
    )


def build_roller(settings: Settings, clickhouse: ClickHouse, owner: str | None = None, metrics: Metrics | None = None) -> Roller:
    """``owner``: a name that stays the roller's across restarts (serve's, one per data dir), so a
    restarted process takes its shares back at once instead of waiting for its old locks to lapse."""
    assert settings.redis_url, "the roller needs a Redis URL"
    # Its own connection: the roller runs in its own thread beside the worker loop.
    client = sync_client(settings.redis_url, socket_timeout=30)
    stream = RollupStream(client, settings.stream, settings.consumer_group, settings.dead_letter_stream)
    protocol = RollupProtocol(
        client, settings.stream, settings.consumer_group, settings.rollup_shards, settings.rollup_max_lag_ms
    )
    return Roller(
        protocol,
        stream,
        clickhouse,
        settings.rollup_cache_sessions,
        settings.rollup_idle_ms,
        owner=owner,
        metrics=RollerMetrics(metrics),
    )


def start_ops_server(
    settings: Settings, metrics: Metrics, clickhouse: ClickHouse, liveness: dict | None = None
) -> OpsServer | None:
    """/metrics (with the stream's gauges), /healthz and /readyz on ABACUS_METRICS_PORT, if set."""
    if not settings.metrics_port:
        return None
    from shared.stream_metrics import StreamCollector

    assert settings.redis_url
    # Its own short-timeout connection: a hung Redis must not hold a scrape or a probe for long.
    redis_client = sync_client(settings.redis_url, socket_timeout=2)
    metrics.collect_also(StreamCollector(redis_client, settings.stream, settings.dead_letter_stream, settings.consumer_group))

    def redis_ready() -> str | None:
        redis_client.ping()
        return None

    def clickhouse_ready() -> str | None:
        clickhouse.client().query("SELECT 1")
        return None

    server = OpsServer(
        metrics,
        settings.metrics_host,
        settings.metrics_port,
        liveness or {},
        {"redis": redis_ready, "clickhouse": clickhouse_ready},
    )
    log.info("metrics and health on http://%s:%d", settings.metrics_host, server.port)
    return server.start()


def run_worker_process(settings: Settings, burst: bool = False) -> int:
    clickhouse = ClickHouse(settings.clickhouse_url or "")
    metrics = Metrics()
    worker = build_worker(settings, clickhouse, metrics=metrics)
    # Every worker may become the roller; the others wait as standbys in case it dies. A burst
    # run drains and exits, so it leaves the rollup to the long-running workers.
    roller = build_roller(settings, clickhouse, metrics=metrics) if settings.rollup and not burst else None
    roller_thread = threading.Thread(target=roller.run, name="abacus-rollup", daemon=True) if roller else None
    liveness = {}
    if roller_thread is not None:
        liveness["rollup"] = lambda: (
            None if roller_thread.is_alive() or worker.stopping.is_set() else "the roller thread has stopped"
        )
    ops = None if burst else start_ops_server(settings, metrics, clickhouse, liveness)
    # The start-up heap (every imported module) lives as long as the process. Frozen, it is no
    # longer walked by the full collections that the stream replies set off: each took ~50 ms
    # holding the GIL, stalling reads and inserts alike (a sixth of a drain's time).
    gc.collect()
    gc.freeze()

    def on_signal(signum: int, _frame: object) -> None:
        if worker.stopping.is_set():
            raise SystemExit(128 + signum)  # second signal: stop now, entries stay pending
        log.info("signal %d: finishing the batch in hand, then stopping", signum)
        worker.request_stop()
        if roller is not None:
            roller.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("worker %s reading %s as group %s", worker.consumer.consumer, settings.stream, settings.consumer_group)
    if roller_thread is not None:
        roller_thread.start()
    try:
        worker.run(burst=burst)
    finally:
        if roller is not None and roller_thread is not None:
            roller.request_stop()
            roller_thread.join(30)
            roller.redis.close()
        if ops is not None:
            ops.stop()
        worker.consumer.redis.close()
        clickhouse.close()
    log.info("worker stopped after inserting %d rows", worker.inserted_rows)
    return 0


def run_roller_process(settings: Settings) -> int:
    """`abacus rollup`: the roller alone, for deployments that keep it off the workers' cores
    (ABACUS_ROLLUP=false on the workers). Several can run: one folds, the others stand by."""
    clickhouse = ClickHouse(settings.clickhouse_url or "")
    metrics = Metrics()
    roller = build_roller(settings, clickhouse, metrics=metrics)
    ops = start_ops_server(settings, metrics, clickhouse)

    def on_signal(signum: int, _frame: object) -> None:
        if roller.stopping.is_set():
            raise SystemExit(128 + signum)
        log.info("signal %d: finishing the step in hand, then stopping", signum)
        roller.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("roller standing by for the results rollup of %s", settings.stream)
    try:
        roller.run()
    finally:
        if ops is not None:
            ops.stop()
        roller.redis.close()
        clickhouse.close()
    log.info("roller stopped after folding %d events", roller.folded_events)
    return 0
