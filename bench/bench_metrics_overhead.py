"""What ingest's metrics cost per beacon request, in-process and in prometheus_client's
multiprocess mode (what `abacus ingest --workers N` runs): the calls one accepted single-beacon
request makes (requests and accepted counts, added to the counters in batches) plus its share of one XADD's two histogram
observations (at the requests per XADD the load benchmark sees, ~20).

    python -m bench.bench_metrics_overhead

CPU time of the calls themselves, the minimum of several repeats, so it holds on a busy machine
where the end-to-end wrk figures (bench_ingest) swing by 2x from run to run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

_CHILD = """
import timeit
from ingest.metrics import IngestMetrics
m = IngestMetrics()
flush_every = 5000  # what FLUSH_EVERY_S is at ~20,000 requests/s
per_xadd = 20
def one_request(i=[0]):
    m.request("event", 202)
    m.accepted(1)
    i[0] += 1
    if i[0] % per_xadd == 0:
        m.appended(0.0004, per_xadd)
    if i[0] % flush_every == 0:
        m.flush()
n = 200_000
best = min(timeit.repeat(one_request, number=n, repeat=7)) / n
print(f"{best * 1e6:.3f}")
"""


def measure(multiprocess: bool) -> float:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    with tempfile.TemporaryDirectory() as directory:
        if multiprocess:
            env["PROMETHEUS_MULTIPROC_DIR"] = directory
        out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def main() -> None:
    local, shared = measure(False), measure(True)
    print(f"metrics per accepted single-beacon request: {local:.2f} µs in-process, {shared:.2f} µs multiprocess mode")


if __name__ == "__main__":
    main()
