"""What a running job needs (settings, ClickHouse, Redis), installed by the process that runs
jobs before it starts its rq worker: `abacus jobs`, or `abacus serve`, where chDB lives in the
serving process and can be reached from nowhere else."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from shared.clickhouse import ClickHouse
from shared.settings import Settings


@dataclass(frozen=True)
class JobContext:
    settings: Settings
    clickhouse: ClickHouse
    redis: redis.Redis


_installed: list[JobContext] = []


def install(context: JobContext) -> None:
    _installed[:] = [context]


def uninstall() -> None:
    _installed.clear()


def current() -> JobContext:
    if not _installed:
        raise RuntimeError("no job context: jobs run under `abacus jobs` or `abacus serve`")
    return _installed[0]
