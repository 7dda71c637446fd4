"""The nightly rollup verification: each process that runs jobs looks once a minute, and the
first to see the day's hour (ABACUS_VERIFY_HOUR_UTC) past takes that day's key (SET NX) and
enqueues the job, so several `abacus jobs` replicas enqueue it once a day between them."""

from __future__ import annotations

import datetime as dt
import logging
import threading

import redis
from redis.exceptions import RedisError

from shared import redis_keys
from shared.job_queue import enqueue

log = logging.getLogger(__name__)
_LOOK_EVERY_S = 60.0


def enqueue_if_due(client: redis.Redis, hour_utc: int, now: dt.datetime | None = None) -> bool:
    now = now or dt.datetime.now(dt.timezone.utc)
    if now.hour < hour_utc:
        return False
    if not client.set(redis_keys.VERIFY_DAY + now.date().isoformat(), "1", nx=True, ex=3 * 86400):
        return False
    enqueue(client, "verify_rollup")
    log.info("enqueued the nightly rollup verification")
    return True


def enqueue_alert_check_if_due(client: redis.Redis, every_s: int, now_s: float | None = None) -> bool:
    """One alert check per ``every_s`` slot between all the processes that run jobs."""
    if every_s <= 0:
        return False
    slot = int((now_s if now_s is not None else dt.datetime.now(dt.timezone.utc).timestamp()) // every_s)
    if not client.set(f"{redis_keys.ALERT_SLOT}{every_s}:{slot}", "1", nx=True, ex=every_s * 2):
        return False
    enqueue(client, "check_alerts")
    return True


class NightlySchedule:
    """The nightly verification and the periodic alert check."""

    def __init__(self, client: redis.Redis, hour_utc: int, alert_check_s: int = 0) -> None:
        self._client, self._hour, self._alert_every = client, hour_utc, alert_check_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="abacus-jobs-schedule", daemon=True)

    def start(self) -> NightlySchedule:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                enqueue_if_due(self._client, self._hour)
                enqueue_alert_check_if_due(self._client, self._alert_every)
            except RedisError as exc:
                log.warning("could not check the nightly schedule: %s", exc)
            self._stop.wait(_LOOK_EVERY_S)
