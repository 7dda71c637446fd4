"""`abacus worker`: one consumer of the stream, as its own process. Never imports Litestar."""

from __future__ import annotations

import logging
import signal
import threading

from shared.clickhouse import ClickHouse
from shared.heap import settle_heap
from shared.ops_http import OpsServer
from shared.prom import Metrics
from shared.redis_conn import sync_client_for
from shared.redis_keys import stream_layout
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
    settings: Settings,
    clickhouse: ClickHouse,
    consumer_name: str | None = None,
    shard: int = 0,
    metrics: Metrics | WorkerMetrics | None = None,
) -> Worker:
    """The worker of one stream shard (the only one, by default). ``metrics``: a process's
    registry, or the WorkerMetrics its other shards' workers count in (a registry holds each
    series once)."""
    assert settings.redis_url, "the worker needs a Redis URL"
    # The socket timeout must outlast the longest blocking read (batch_wait) by a margin.
    client = sync_client_for(settings, socket_timeout=settings.batch_wait_ms / 1000 + 10)
    layout = stream_layout(settings)[shard]
    consumer = StreamConsumer(
        client,
        layout.stream,
        settings.consumer_group,
        consumer_name or settings.worker_name,
        layout.dead_letter,
        shard=layout,
    )
    return Worker(
        consumer,
        ClickHouseSink(clickhouse, token_scope=layout.tag),
        batch_size=settings.batch_size,
        batch_wait_ms=settings.batch_wait_ms,
        max_deliveries=settings.max_deliveries,
        claim_idle_ms=settings.claim_idle_ms,
        metrics=metrics if isinstance(metrics, WorkerMetrics) else WorkerMetrics(metrics),
    )


def build_workers(
    settings: Settings, clickhouse: ClickHouse, consumer_name: str | None = None, metrics: Metrics | None = None
) -> list[Worker]:
    """One worker per stream shard: a process consumes every shard, each in a loop of its own."""
    counted = WorkerMetrics(metrics)  # one set of series, summed over the shards' loops
    return [build_worker(settings, clickhouse, consumer_name, shard, counted) for shard in range(max(1, settings.stream_shards))]


def build_roller(settings: Settings, clickhouse: ClickHouse, owner: str | None = None, metrics: Metrics | None = None) -> Roller:
    """``owner``: a name that stays the roller's across restarts (serve's, one per data dir), so a
    restarted process takes its shares back at once instead of waiting for its old locks to lapse."""
    assert settings.redis_url, "the roller needs a Redis URL"
    # Its own connection: the roller runs in its own thread beside the worker loop.
    client = sync_client_for(settings, socket_timeout=30)
    layout = stream_layout(settings)
    stream = RollupStream(client, layout, settings.consumer_group)
    protocol = RollupProtocol(client, layout, settings.consumer_group, settings.rollup_shards, settings.rollup_max_lag_ms)
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
    redis_client = sync_client_for(settings, socket_timeout=2)
    metrics.collect_also(StreamCollector(redis_client, stream_layout(settings), settings.consumer_group))

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
    clickhouse = ClickHouse(settings.clickhouse_url or "", settings.clickhouse_cluster)
    metrics = Metrics()
    workers = build_workers(settings, clickhouse, metrics=metrics)
    worker = workers[0]
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
    # The start-up heap frozen and young collections rarer (shared/heap.py): each full collection
    # took ~50 ms holding the GIL, stalling reads and inserts alike (a sixth of a drain's time).
    settle_heap()

    def on_signal(signum: int, _frame: object) -> None:
        if worker.stopping.is_set():
            raise SystemExit(128 + signum)  # second signal: stop now, entries stay pending
        log.info("signal %d: finishing the batch in hand, then stopping", signum)
        for each in workers:
            each.request_stop()
        if roller is not None:
            roller.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    streams = ", ".join(each.consumer.stream for each in workers)
    log.info("worker %s reading %s as group %s", worker.consumer.consumer, streams, settings.consumer_group)
    if roller_thread is not None:
        roller_thread.start()
    # The other stream shards' loops in threads; the first in this (the signal-handling) thread.
    others = [
        threading.Thread(target=each.run, kwargs={"burst": burst}, name=f"abacus-worker-{i + 1}")
        for i, each in enumerate(workers[1:])
    ]
    for thread in others:
        thread.start()
    try:
        worker.run(burst=burst)
        for thread in others:
            thread.join()
    finally:
        for each in workers[1:]:
            each.request_stop()
        for thread in others:
            thread.join(30)
            # (a thread still running after 30 s is a daemon-less straggler: its batch stays pending)
        for each in workers[1:]:
            each.consumer.redis.close()
        if roller is not None and roller_thread is not None:
            roller.request_stop()
            roller_thread.join(30)
            roller.redis.close()
        if ops is not None:
            ops.stop()
        worker.consumer.redis.close()
        clickhouse.close()
    log.info("worker stopped after inserting %d rows", sum(each.inserted_rows for each in workers))
    return 0


def run_roller_process(settings: Settings) -> int:
    """`abacus rollup`: the roller alone, for deployments that keep it off the workers' cores
    (ABACUS_ROLLUP=false on the workers). Several can run: one folds, the others stand by."""
    clickhouse = ClickHouse(settings.clickhouse_url or "", settings.clickhouse_cluster)
    metrics = Metrics()
    roller = build_roller(settings, clickhouse, metrics=metrics)
    ops = start_ops_server(settings, metrics, clickhouse)
    settle_heap()  # as the workers' processes do: full collections walked every step's keys

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
