"""Running jobs: `abacus jobs` (an rq worker as its own process) and the worker thread of
`abacus serve`. Both use rq's SimpleWorker, which runs each job in the worker's own process
instead of a forked child: a fork would copy chDB's engine (serve) and connections mid-use."""

from __future__ import annotations

import logging
import threading

from rq import SimpleWorker
from rq.exceptions import StopRequested
from rq.timeouts import TimerDeathPenalty

from jobs.context import JobContext, install, uninstall
from jobs.schedule import NightlySchedule
from shared.clickhouse import ClickHouse
from shared.job_queue import QUEUE_NAME, job_queue, jobs_redis
from shared.redis_conn import sync_client_for
from shared.settings import Settings

log = logging.getLogger(__name__)
# rq blocks on the queue for its worker_ttl less 15 s: 16 makes a stop request take effect within ~1 s.
_THREAD_WORKER_TTL_S = 16
_RESTART_FIRST_S, _RESTART_MAX_S = 0.5, 30.0  # back-off of serve's jobs thread after its worker failed


class ThreadJobWorker(SimpleWorker):
    """An rq worker in a thread of another process: signals are the process's own business, so
    neither its stop handling nor a job's time limit (SIGALRM by default) may use them."""

    death_penalty_class = TimerDeathPenalty

    def _install_signal_handlers(self) -> None:
        pass

    def request_thread_stop(self) -> None:
        self._stop_requested = True

    def heartbeat(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        # rq's wait for a job loops until one comes, beating between blocking reads of about a
        # second: the beat is where a stop requested from another thread can end it.
        if self._stop_requested:
            raise StopRequested()
        return super().heartbeat(*args, **kwargs)

    def teardown(self) -> None:
        # rq records the worker's death in Redis before it stops the listener on its command
        # channel: with Redis gone the first raises, and the listener would be left running, one
        # more (with its connection) after every outage.
        try:
            super().teardown()
        finally:
            listener = self.pubsub_thread
            if listener is not None and listener.is_alive():
                listener.stop()
                listener.join(timeout=1)

    def busy(self) -> bool:
        """Whether its command-channel listener still runs (waiting on Redis)."""
        return self.pubsub_thread is not None and self.pubsub_thread.is_alive()


def job_redis(settings: Settings):  # type: ignore[no-untyped-def]
    """rq's client. Its timeout is longer than rq's blocking dequeue, or a quiet queue reads as a
    Redis timeout."""
    assert settings.redis_url
    return jobs_redis(settings, socket_timeout=60)


def data_redis(settings: Settings, rq_client):  # type: ignore[no-untyped-def]
    """The client the jobs read and write the stream and rollup keys with: rq's own when the queue
    lives on the main Redis, else one for the main Redis (a cluster's client there)."""
    return rq_client if not settings.jobs_redis_url else sync_client_for(settings, socket_timeout=60)


class JobsThread:
    """serve's jobs: a ThreadJobWorker started with the app and stopped with it."""

    def __init__(self, settings: Settings, clickhouse: ClickHouse) -> None:
        self._redis = job_redis(settings)
        self._data_redis = data_redis(settings, self._redis)
        install(JobContext(settings, clickhouse, self._data_redis))
        self.worker = self._new_worker()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="abacus-jobs", daemon=True)
        self._schedule = NightlySchedule(self._redis, settings.verify_hour_utc, settings.alert_check_s)

    def _new_worker(self) -> ThreadJobWorker:
        return ThreadJobWorker([job_queue(self._redis)], connection=self._redis, worker_ttl=_THREAD_WORKER_TTL_S)

    def _run(self) -> None:
        # rq's loop ends with an exception when Redis goes away; an outage is not the thread's
        # death (/healthz would fail, and a restart would not bring Redis back): start it again.
        backoff = _RESTART_FIRST_S
        while not self._stopping.is_set():
            try:
                self.worker.work(logging_level="WARNING")
                if self._stopping.is_set():
                    return
                log.warning("the jobs worker ended by itself; starting it again in %.1fs", backoff)
            except Exception:  # noqa: BLE001 - logged, then the worker starts again
                log.warning("the jobs worker stopped (Redis unavailable?); starting it again in %.1fs", backoff, exc_info=True)
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, _RESTART_MAX_S)
            try:
                self.worker = self._new_worker()  # rq reads Redis here too: it may still be down
            except Exception:  # noqa: BLE001 - tried again after the next back-off
                log.warning("the jobs worker cannot start yet (Redis unavailable?)", exc_info=True)

    def start(self) -> None:
        self._thread.start()
        self._schedule.start()

    def alive(self) -> str | None:
        return None if self._thread.is_alive() or self._stopping.is_set() else "the jobs worker thread has stopped"

    def stop(self, timeout: float = 10) -> None:
        self._stopping.set()
        self.worker.request_thread_stop()
        self._schedule.stop()
        self._thread.join(timeout)
        if self._thread.is_alive() or self.worker.busy():
            # Still waiting on Redis (a hung server): closing its clients under it would crash
            # the worker's threads mid-read. They end by themselves once Redis answers, or with
            # the process.
            log.warning("the jobs worker did not stop within %.0fs (Redis hung?); it ends once Redis answers", timeout)
            return
        uninstall()
        self._redis.close()
        self._data_redis.close()


def run_jobs_process(settings: Settings, burst: bool = False) -> int:
    """`abacus jobs`: rq's worker loop, its own signal handling (SIGTERM finishes the job in hand)."""
    from shared.prom import Metrics
    from worker.main import start_ops_server

    clickhouse = ClickHouse(settings.clickhouse_url or "", settings.clickhouse_cluster)
    redis_client = job_redis(settings)
    stream_client = data_redis(settings, redis_client)
    install(JobContext(settings, clickhouse, stream_client))
    metrics = Metrics()
    ops = start_ops_server(settings, metrics, clickhouse)
    schedule = NightlySchedule(redis_client, settings.verify_hour_utc, settings.alert_check_s).start()
    log.info("running background jobs from rq queue %s", QUEUE_NAME)
    try:
        SimpleWorker([job_queue(redis_client)], connection=redis_client).work(
            burst=burst, logging_level=settings.log_level.upper()
        )
    finally:
        schedule.stop()
        if ops is not None:
            ops.stop()
        uninstall()
        redis_client.close()
        stream_client.close()
        clickhouse.close()
    return 0
