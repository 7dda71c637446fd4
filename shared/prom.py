"""Prometheus metrics for every Abacus process, one way to create and render them.

Under several server worker processes (`abacus ingest --workers N`, `abacus query-api --workers N`)
each process counts on its own; prometheus_client's multiprocess mode keeps every process's values
in memory-mapped files in ``PROMETHEUS_MULTIPROC_DIR`` and each scrape sums them, so a counter
never jumps back when the scrape lands on another process. The CLI creates that directory before
the server forks (prometheus_client picks its value class when first imported, so the variable
must be set by then) and removes it on exit. Without it (serve, worker, tests) values live in
the process, in a registry of their own per app, so two apps in one test process never collide.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from shared.metrics_dir import MULTIPROC_ENV

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Seconds: an XADD or a ClickHouse insert takes from well under a millisecond to seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 50000)


class Metrics:
    """A process's (or an app's) metrics: ``counter``/``gauge``/``histogram`` create them,
    ``collect_also`` adds collectors that read their values when scraped (stream length, lag),
    ``render`` is the body of /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._scrape_time: list[Collector] = []
        self._before_render: list[Callable[[], None]] = []

    def counter(self, name: str, documentation: str, labels: Iterable[str] = ()) -> Counter:
        return Counter(name, documentation, list(labels), registry=self.registry)

    def gauge(self, name: str, documentation: str, labels: Iterable[str] = ()) -> Gauge:
        # Under multiprocess mode a gauge set by one process must not add up: the latest value wins.
        return Gauge(name, documentation, list(labels), registry=self.registry, multiprocess_mode="mostrecent")

    def histogram(self, name: str, documentation: str, buckets: tuple[float, ...], labels: Iterable[str] = ()) -> Histogram:
        return Histogram(name, documentation, list(labels), registry=self.registry, buckets=buckets)

    def collect_also(self, collector: Collector) -> None:
        self._scrape_time.append(collector)
        self.registry.register(collector)

    def before_render(self, hook: Callable[[], None]) -> None:
        """``hook`` runs before each render: values counted in batches are added first."""
        self._before_render.append(hook)

    def render(self) -> bytes:
        for hook in self._before_render:
            hook()
        directory = os.environ.get(MULTIPROC_ENV)
        if not directory:
            return generate_latest(self.registry)
        combined = CollectorRegistry(auto_describe=False)
        _SizedFilesCollector(combined, path=directory)
        for collector in self._scrape_time:
            combined.register(collector)
        return generate_latest(combined)


class _SizedFilesCollector(MultiProcessCollector):
    """prometheus_client's multiprocess collector, skipping value files that are still empty.

    A process creates its value file first and sizes it a moment later, and a scrape that reads
    the file in that moment fails as a whole (prometheus/client_python#1199, open upstream):
    `abacus ingest --workers 2` answered /metrics with a 500 when a scrape met the second
    process's first counter. An empty file holds no value yet, so leaving it out loses nothing."""

    def collect(self):  # type: ignore[no-untyped-def]
        files = []
        for name in glob.glob(os.path.join(self._path, "*.db")):
            try:
                if os.path.getsize(name) > 0:
                    files.append(name)
            except OSError:
                continue  # removed since the listing (a process marked dead): nothing to read
        return self.merge(files, accumulate=True)
