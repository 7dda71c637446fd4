"""Results API latency on 1M and 10M events, against `SELECT count() FROM abacus.events` on the same data.

    .venv/bin/python -m bench.bench_results_query [--sizes 1000000,10000000] [--calls 20] [--tiny]

For each size, M events over 2 experiments x 3 variants are generated inside ClickHouse
(INSERT ... SELECT FROM numbers(M)): M/5 sessions, each sticky to one variant (0.5% of beacons
carry another variant, like a cleared cookie), each within half an hour somewhere in a 14-day
window; 70% impressions, 15% cta_click, 6% form_start, 4% form_submit, 5% conversions with a
value. The rows bypass the stream, so the results rollup is then rebuilt from them (the admin
endpoint; its duration is printed). The whole `abacus serve` app answers over HTTP in-process
(litestar TestClient, admin token): all-time results of both experiments with the analysis (read
from the rollup), one experiment, a 7-day window of whole UTC days and a whole hour (summed
from the rollup's per-minute totals), an hour from :30 s (computed from the events: its bounds
cut minutes), `metrics=all` (from the rollup's metric columns), and the daily
time series (from the rollup), after a warm-up; each series checks the source it came from. The baseline is `SELECT count() FROM abacus.events` on the same chDB
(answered from part metadata, so it stays ~1 ms at any size: the ratio is mostly the results
latency itself). Background merges are left to settle after generating, then stopped while
timing, so every series sees the same part layout and no merge competes for the CPU.

Then the SQL alone, without HTTP and the analysis, and variants of it (no FINAL, no window
function, the inner GROUP BY only), to show where the time goes. The last line is the ratio
of the p50s, results/baseline, at the largest size.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import REPO, machine, merges_running, start_valkey, wait_for_merges

VARIANTS = {
    "homepage_hero_test": ["control", "tiny_gang_social_proof", "video_testimonial"],
    "pricing_cta_test": ["control", "meet_greet_emphasis", "price_anchor"],
}
KEYS = list(VARIANTS)

GENERATE_SQL = """
INSERT INTO abacus.events
    (event_id, experiment_key, variant_key, session_id, event_type, path, conversion_value, metadata, client_ts, received_at)
SELECT
    lower(hex(sipHash128(number, {salt:UInt64}))) AS event_id,
    ['homepage_hero_test', 'pricing_cta_test'][e + 1] AS experiment_key,
    [['control', 'tiny_gang_social_proof', 'video_testimonial'], ['control', 'meet_greet_emphasis', 'price_anchor']][e + 1][v + 1] AS variant_key,
    concat('sess_', lower(hex(sipHash64(s, {salt:UInt64})))) AS session_id,
    multiIf(r < 700, 'impression', r < 850, 'cta_click', r < 910, 'form_start', r < 950, 'form_submit', 'conversion') AS event_type,
    ['/', '/our-pricing'][e + 1] AS path,
    if(r >= 950, round(10 + (intDiv(intHash64(number), 1048576) % 19000) / 100, 2), NULL) AS conversion_value,
    if(r >= 700 AND r < 850, '{"element":"Explore Pack Walks","slot":"primary"}', '{}') AS metadata,
    received_at - toIntervalMillisecond(150) AS client_ts,
    addMilliseconds(toDateTime64('2026-01-05 00:00:00', 3, 'UTC'), (intHash32(s) % 1209600) * 1000 + (intHash64(number) % 1800000)) AS received_at
FROM
(
    SELECT
        number,
        intHash64(number) % {sessions:UInt64} AS s,
        intHash32(number) % 1000 AS r,
        s % 2 AS e,
        if(intHash32(number + 1) % 200 = 0, (intHash32(s) + 1) % 3, intHash32(s) % 3) AS v
    FROM numbers({rows:UInt64})
)
"""


def seed_file(directory: Path) -> Path:
    """The example registry with a third variant in each experiment."""
    seed = json.loads((REPO / "query_api" / "registry.example.json").read_text())
    extra = {
        "homepage_hero_test": ("video_testimonial", "Video testimonial"),
        "pricing_cta_test": ("price_anchor", "Price anchor"),
    }
    for experiment in seed["experiments"]:
        key, label = extra[experiment["experiment_key"]]
        experiment["variants"].append({"variant_key": key, "label": label, "allocation": 0, "is_control": False})
        for variant, allocation in zip(experiment["variants"], (34, 33, 33)):
            variant["allocation"] = allocation
    path = directory / "registry.bench.json"
    path.write_text(json.dumps(seed))
    return path


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def timed(call: Callable[[], object], calls: int, warmup: int) -> list[float]:
    """Milliseconds per call, after `warmup` untimed calls."""
    for _ in range(warmup):
        call()
    out = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        out.append((time.perf_counter() - started) * 1000)
    return out


def line(name: str, ms: list[float]) -> tuple[float, float]:
    p50, p95 = statistics.median(ms), percentile(ms, 0.95)
    print(f"  {name:<50} p50 {p50:9.1f} ms   p95 {p95:9.1f} ms   ({len(ms)} calls)")
    return p50, p95


def http_get(client, path: str, headers: dict[str, str]) -> Callable[[], object]:  # type: ignore[no-untyped-def]
    def call() -> object:
        response = client.get(path, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"GET {path}: {response.status_code} {response.text[:300]}")
        return response.content

    return call


def sql(client, text: str, parameters: dict | None = None) -> Callable[[], object]:  # type: ignore[no-untyped-def]
    return lambda: client.query(text, parameters=parameters or {}).result_rows


def explain(client, text: str, parameters: dict) -> str:  # type: ignore[no-untyped-def]
    rows = client.query("EXPLAIN indexes = 1 " + text, parameters=parameters).result_rows
    return "\n".join("    " + (row[0] if len(row[0]) <= 150 else row[0][:147] + "...") for row in rows if row[0].strip())


def rebuild_rollup(client_http, headers: dict[str, str]) -> float:  # type: ignore[no-untyped-def]
    """Ask for a rollup rebuild and wait until the roller has finished it; seconds taken."""
    started = time.perf_counter()
    response = client_http.post("/api/v1/admin/rollup/rebuild", headers=headers)
    if response.status_code != 202:
        raise RuntimeError(f"rebuild: {response.status_code} {response.text[:300]}")
    while True:
        status = client_http.get("/api/v1/admin/rollup", headers=headers).json()
        if status["live"] and not status["rebuild_requested"]:
            return time.perf_counter() - started
        time.sleep(0.05)


def measure_size(client_http, headers: dict[str, str], service, rows: int, args: argparse.Namespace) -> dict[str, float]:  # type: ignore[no-untyped-def]
    ch = service.clickhouse.client()
    ch.command("TRUNCATE TABLE abacus.events")
    started = time.perf_counter()
    ch.command(
        GENERATE_SQL.replace("{salt:UInt64}", "42")
        .replace("{sessions:UInt64}", str(max(1, rows // 5)))
        .replace("{rows:UInt64}", str(rows)),
        settings={"max_insert_threads": 2},
    )
    generated_s = time.perf_counter() - started
    rebuilt_s = rebuild_rollup(client_http, headers)
    # The rebuild copies every event into abacus.rollup_events: its merges must settle too.
    waited_s = sum(
        wait_for_merges(ch, args.merge_wait, quiet_s=1.0 if args.tiny else 5.0, table=table) for table in _TIMED_TABLES
    )
    still_running = sum(merges_running(ch, table) for table in _TIMED_TABLES)
    # Freeze the part layout while timing: a merge starting mid-series would compete for the two
    # cores and change what FINAL has to merge at read time.
    for table in _TIMED_TABLES:
        ch.command(f"SYSTEM STOP MERGES abacus.{table}")
    try:
        return timings(client_http, headers, service, ch, rows, generated_s, waited_s, still_running, args, rebuilt_s) | {
            "rebuild_s": rebuilt_s
        }
    finally:
        for table in _TIMED_TABLES:
            ch.command(f"SYSTEM START MERGES abacus.{table}")


_TIMED_TABLES = ("events", "rollup_events", "rollup_cohort_totals")


def timings(client_http, headers, service, ch, rows, generated_s, waited_s, still_running, args, rebuild_s) -> dict[str, float]:  # type: ignore[no-untyped-def]
    from query_api.results_routes import ResultsQuery, build_results
    from shared.rollup.results_sql import EVENTS_SOURCE, variant_totals_sql

    parts, on_disk = ch.query(
        "SELECT count(), sum(bytes_on_disk) FROM system.parts WHERE database = 'abacus' AND table = 'events' AND active"
    ).result_rows[0]
    sessions = ch.query("SELECT uniqExact(session_id) FROM abacus.events").result_rows[0][0]
    print(
        f"\n{rows:,} events ({sessions:,} sessions) generated in {generated_s:.1f} s; "
        f"waited {waited_s:.0f} s for merges to settle ({still_running} still running; merges stopped for the timing); "
        f"{parts} active parts, {on_disk / 1e6:.0f} MB on disk; rollup rebuilt from them in {rebuild_s:.1f} s"
    )

    calls, warmup = args.calls, args.warmup
    one = KEYS[0]
    api = "/api/v1/experiments/results"
    out: dict[str, float] = {}
    print(" HTTP, whole app in-process (auth, registry, SQL, analysis, JSON):")
    week = "from=2026-01-08T00:00:00Z&to=2026-01-15T00:00:00Z"
    hour = "from=2026-01-10T10:00:00Z&to=2026-01-10T11:00:00Z"
    odd_hour = "from=2026-01-10T10:00:30Z&to=2026-01-10T11:00:30Z"  # bounds inside minutes
    for key, label, path, source in (
        ("results", "GET /results (2 experiments, analysis; rollup)", api, "rollup"),
        ("results_one", f"GET /results?experiment_key={one}", f"{api}?experiment_key={one}", "rollup"),
        ("results_week", "GET /results, 7 whole days (rollup)", f"{api}?{week}", "rollup"),
        ("results_window", "GET /results, one whole hour (rollup)", f"{api}?{hour}", "rollup"),
        ("results_odd_window", "GET /results, one hour from :30 s (events)", f"{api}?{odd_hour}", "events"),
        (
            "timeseries",
            f"GET /results/timeseries ({one}, day; rollup)",
            f"{api}/timeseries?experiment_key={one}&interval=day",
            "rollup",
        ),
    ):
        got = client_http.get(path, headers=headers).headers["x-abacus-source"]
        if got != source:
            raise RuntimeError(f"{path}: expected the {source}, the answer came from the {got}")
        out[key], out[key + "_p95"] = line(label, timed(http_get(client_http, path, headers), calls, warmup))
    # A binomial metric per event type and the ratio: the rollup carries them for the built-in
    # types (the bench has no custom ones).
    path = f"{api}?experiment_key={one}&metrics=all"
    if (got := client_http.get(path, headers=headers).headers["x-abacus-source"]) != "rollup":
        raise RuntimeError(f"{path}: expected the rollup, the answer came from the {got}")
    out["results_metrics"], out["results_metrics_p95"] = line(
        f"GET /results?experiment_key={one}&metrics=all (rollup)", timed(http_get(client_http, path, headers), calls, warmup)
    )
    print(" baseline:")
    out["baseline"], out["baseline_p95"] = line(
        "SELECT count() FROM abacus.events", timed(sql(ch, "SELECT count() FROM abacus.events"), calls, warmup)
    )

    # Where the time goes: the same SQL without HTTP, then with one feature taken out at a time.
    split_calls = max(3, calls // 4)
    params = {"keys": KEYS}
    full = variant_totals_sql(EVENTS_SOURCE)
    scan = (
        "SELECT experiment_key, variant_key, countIf(event_type = 'impression'), countIf(event_type = 'conversion'), "
        "sum(conversion_value), uniq(session_id) FROM abacus.events GROUP BY experiment_key, variant_key"
    )
    print(f" split ({split_calls} calls each):")
    out["build"], _ = line(
        "build_results() without HTTP (rollup + analysis)",
        timed(lambda: build_results(service, ResultsQuery(None, None, None, 0.95, False, None)), split_calls, 1),
    )
    for key, label, text in (
        ("sql", "results SQL over the events alone", full),
        ("sql_no_final", "  without FINAL", full.replace("FROM abacus.events FINAL", "FROM abacus.events")),
        ("count_final", "SELECT count() FROM abacus.events FINAL", "SELECT count() FROM abacus.events FINAL"),
        ("scan_group", "plain scan: GROUP BY variant, countIf per type", scan),
    ):
        out[key], _ = line(label, timed(sql(ch, text, params), split_calls, 1))
    out |= split_phase_and_metric_sql(service, ch, one, split_calls)
    if args.explain:
        print(" EXPLAIN indexes = 1 (results SQL, long lines cut):")
        print(explain(ch, full, params))
    # Last, and at the largest size only, as it changes the registry for good: an allocation change
    # makes two phases (the second starts now, after the data: read from the rollup days).
    if args.split_phases:
        split_allocations(client_http, headers, one)
    for key, label, query in (
        (
            ("results_phases", f"GET /results?experiment_key={one}, two phases (current; rollup days)", ""),
            ("results_phases_all", f"GET /results?experiment_key={one}&phase=all (stratified; rollup days)", "&phase=all"),
        )
        if args.split_phases
        else ()
    ):
        path = f"{api}?experiment_key={one}{query}"
        answer = client_http.get(path, headers=headers)
        # The second phase starts today, after the data: every cohort minute is whole in phase 1.
        if answer.headers["x-abacus-source"] != "rollup" or len(answer.json()[0]["phases"]) != 2:
            raise RuntimeError(f"{path}: expected two phases from the rollup's per-minute totals")
        out[key], out[key + "_p95"] = line(label, timed(http_get(client_http, path, headers), calls, warmup))
    return out


def split_phase_and_metric_sql(service, ch, key: str, calls: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """The queries behind two phases and metrics=all, one at a time: where their time goes."""
    from query_api.results_phases import custom_event_types, fetch_phase_metrics, fetch_phase_totals, metric_plan, phase_starts
    from query_api.results_query import fetch_rollup_phase_totals
    from query_api.results_sources import phase_totals_from_rollup
    from query_api.stats.phases import Phase

    experiment = service.store.snapshot().find(key)
    # A phase boundary inside the data, inside a minute (the minute counts in phase 1).
    split_at = dt.datetime(2026, 1, 12, 12, 0, 30, 500_000, tzinfo=dt.timezone.utc)
    phases = [Phase(1, split_at - dt.timedelta(days=30), split_at, {}), Phase(2, split_at, None, {})]
    plan = metric_plan(experiment, (), True, custom_event_types(ch, key))
    out: dict[str, float] = {}
    for name, label, call in (
        (
            "sql_rollup_days",
            "rollup per-phase rows of one experiment (SQL)",
            lambda: fetch_rollup_phase_totals(ch, key, phase_starts(phases)),
        ),
        (
            "sql_phases_cut",
            "two phases split inside a minute (rollup, with the Python around it)",
            lambda: phase_totals_from_rollup(ch, key, phases, None, None),
        ),
        (
            "sql_phase_totals_events",
            "two phases' totals from all events (before)",
            lambda: fetch_phase_totals(ch, key, phases, None, None),
        ),
        ("sql_custom_events", "metrics=all: custom event types", lambda: custom_event_types(ch, key)),
        (
            "sql_metrics",
            "metrics=all: metric statistics (events)",
            lambda: fetch_phase_metrics(ch, key, phases[:1], plan, None, None),
        ),
    ):
        out[name], _ = line(label, timed(call, calls, 1))
    return out


def split_allocations(client_http, headers, key: str) -> None:  # type: ignore[no-untyped-def]
    """Change the experiment's allocations (forced, as it is enabled): a second phase starts now."""
    current = client_http.get(f"/api/admin/experiments/{key}", headers=headers).json()
    fields = {f: current[f] for f in ("name", "description", "cookie_name", "enabled", "eligible_routes", "variants")}
    shares = [50] + [50 // (len(fields["variants"]) - 1)] * (len(fields["variants"]) - 1)
    shares[-1] += 100 - sum(shares)
    fields["variants"] = [{**v, "allocation": share} for v, share in zip(fields["variants"], shares)]
    answer = client_http.put(f"/api/admin/experiments/{key}?force=true", json=fields, headers=headers)
    if answer.status_code != 200:
        raise RuntimeError(f"allocation change refused: {answer.status_code} {answer.text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,10000000", help="comma-separated event counts (default 1000000,10000000)")
    parser.add_argument("--calls", type=int, default=20, help="timed calls per endpoint")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before each series")
    parser.add_argument("--merge-wait", type=float, default=120.0, help="longest wait for background merges after generating (s)")
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN indexes = 1 of the results SQL")
    parser.add_argument("--tiny", action="store_true", help="a few seconds, for CI: 20,000 events, 3 calls")
    args = parser.parse_args()
    if args.tiny:
        args.sizes, args.calls, args.warmup, args.merge_wait = "20000", 3, 1, 5.0
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]

    from litestar.testing import TestClient

    from abacus.serve import create_serve_app
    from query_api.auth import mint_token
    from shared.clickhouse import chdb_url
    from shared.settings import Settings

    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f} (shared machine: figures vary with other load)")
    print(
        f"sizes {', '.join(f'{s:,}' for s in sizes)}; 2 experiments x 3 variants; {args.calls} timed calls after {args.warmup} warm-up"
    )
    valkey = start_valkey()
    tmp = tempfile.TemporaryDirectory(prefix="abacus-bench-results-")
    data_dir = Path(tmp.name)
    settings = Settings(
        redis_url=valkey.connection_url + "/0",
        clickhouse_url=chdb_url(data_dir),
        data_dir=data_dir,
        jwt_secret=secrets.token_urlsafe(48),
        registry_seed=seed_file(data_dir),
    )
    headers = {"Authorization": "Bearer " + mint_token(settings.jwt_secret or "", "bench", "admin", dt.timedelta(hours=2))}
    results: dict[int, dict[str, float]] = {}
    try:
        app = create_serve_app(settings)
        logging.getLogger("httpx").setLevel(logging.WARNING)  # no line per request
        with TestClient(app=app, raise_server_exceptions=True) as client:  # type: ignore[arg-type]
            body = client.get("/api/v1/experiments/results", headers=headers).json()
            shape = {e["experiment_key"]: [v["variant_key"] for v in e["variants"]] for e in body}
            if shape != VARIANTS:
                raise SystemExit(f"registry is not the 2 x 3 bench registry: {shape}")
            litestar_app = app
            while not hasattr(litestar_app, "state"):  # under the HEAD, body-deadline, CORS, ingest-edge and metrics wrappers
                litestar_app = litestar_app.app
            service = litestar_app.state.query_service  # the app's own ClickHouse and registry
            for rows in sizes:
                args.split_phases = rows == sizes[-1]
                results[rows] = measure_size(client, headers, service, rows, args)
    finally:
        valkey.stop()
        tmp.cleanup()

    print()
    for rows, r in results.items():
        print(
            f"{rows:>12,} events: results p50 {r['results']:.1f} ms from the rollup (rebuild {r['rebuild_s']:.1f} s); "
            f"7 whole days {r['results_week']:.1f} ms and one hour {r['results_window']:.1f} ms from the rollup; "
            f"an hour from :30 s {r['results_odd_window']:.1f} ms from the events "
            f"(SQL alone over all events {r['sql']:.1f} ms); daily time series {r['timeseries']:.1f} ms; "
            f"metrics=all {r['results_metrics']:.1f} ms from the rollup; two phases cut inside a minute "
            f"{r['sql_phases_cut']:.1f} ms (rollup); "
            + (
                f"two phases {r['results_phases']:.1f} ms (phase=all {r['results_phases_all']:.1f} ms) from the rollup; "
                if "results_phases" in r
                else ""
            )
            + f"baseline p50 {r['baseline']:.2f} ms"
        )
    largest = sizes[-1]
    r = results[largest]
    print(
        f"at {largest:,} events, p50: all-time {r['results']:.1f} ms (rollup), 7-day window {r['results_week']:.1f} ms (rollup), "
        f"hourly window {r['results_window']:.1f} ms (rollup), metrics=all {r['results_metrics']:.1f} ms (rollup), "
        f"two phases cut inside a minute {r['sql_phases_cut']:.1f} ms (rollup, no HTTP), an hour from :30 s {r['results_odd_window']:.1f} ms (events)"
    )


if __name__ == "__main__":
    sys.exit(main())
