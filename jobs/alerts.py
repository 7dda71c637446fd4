"""Alert webhooks: when an experiment shows a sample ratio mismatch, or a treatment reaches a
significant win or loss, POST it to every ABACUS_ALERT_WEBHOOKS URL, signed, once per event.

An event is named by what happened to which version of the experiment
(``homepage_hero_test:v3:srm``, ``homepage_hero_test:v3:treatment:win``), so a new version, or a
verdict that changes, is a new event, and the same verdict seen again is not. Each (event, URL)
is delivered at most once: a Redis key records the delivery after the receiver's 2xx, and a
short lock keeps two checks running at once from both sending. A failed delivery is retried
(three tries, backing off), then again by the next check. The body is signed with HMAC-SHA256
of ABACUS_ALERT_SECRET in ``X-Abacus-Signature: sha256=<hex>``; receivers should also
deduplicate by ``X-Abacus-Event-Id`` (a receiver that timed out after acting gets it again).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request

import redis

from query_api.registry_store import RegistryStore
from query_api.results_routes import ResultsQuery, build_results
from query_api.service import QueryService
from shared.clickhouse import ClickHouse
from shared.redis_keys import stream_layout
from shared.settings import Settings

log = logging.getLogger(__name__)
_SENT = "abacus:alerts:sent:"
_SENDING = "abacus:alerts:sending:"
_TRIES = 3
_SIGNIFICANT = {"win", "loss"}


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def alert_events(results: list) -> list[dict]:
    """What the current results say that deserves an alert."""
    events = []
    for experiment in results:
        analysis = experiment.analysis
        base = f"{experiment.experiment_key}:v{experiment.version}"
        srm = analysis.get("srm") or {}
        if srm.get("flagged"):
            events.append(
                {
                    "id": f"{base}:srm",
                    "kind": "sample_ratio_mismatch",
                    "experiment_key": experiment.experiment_key,
                    "version": experiment.version,
                    "p_value": srm.get("p_value"),
                    "message": srm.get("message"),
                }
            )
        for variant in analysis.get("variants", []):
            code = variant.get("status_code")
            if code in _SIGNIFICANT:
                events.append(
                    {
                        "id": f"{base}:{variant['variant_key']}:{code}",
                        "kind": f"significant_{code}",
                        "experiment_key": experiment.experiment_key,
                        "version": experiment.version,
                        "variant_key": variant["variant_key"],
                        "message": variant.get("status_message"),
                    }
                )
    return events


def _deliver(url: str, body: bytes, headers: dict[str, str], timeout_s: float = 5.0) -> None:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=timeout_s) as answer:  # raises on non-2xx
        answer.read()


def check_alerts(settings: Settings, clickhouse: ClickHouse, redis_client: redis.Redis) -> dict:
    urls = [url for url in settings.alert_webhooks if url]
    if not urls:
        return {"events": 0, "sent": 0, "failed": 0, "note": "no ABACUS_ALERT_WEBHOOKS configured"}
    service = QueryService(
        RegistryStore(clickhouse, redis_client),
        None,
        clickhouse,
        redis_client,
        settings.rollup_max_lag_ms,  # type: ignore[arg-type]
        stream=stream_layout(settings),
        worker_group=settings.consumer_group,
        rollup_shards=settings.rollup_shards,
    )
    # All time, the current phase of each experiment, as GET /api/v1/experiments/results answers.
    results, _ = build_results(service, ResultsQuery(None, None, None, 0.95, False, None))
    events = alert_events(results)
    sent = failed = 0
    for event in events:
        body = json.dumps({**event, "sent_at": time.time()}, sort_keys=True).encode()
        headers = {"Content-Type": "application/json", "X-Abacus-Event-Id": event["id"], "User-Agent": "abacus-alerts"}
        if settings.alert_secret:
            headers["X-Abacus-Signature"] = sign(settings.alert_secret, body)
        for url in urls:
            key = hashlib.sha256(f"{event['id']}|{url}".encode()).hexdigest()
            if redis_client.exists(_SENT + key) or not redis_client.set(_SENDING + key, "1", nx=True, ex=60):
                continue
            try:
                for attempt in range(_TRIES):
                    try:
                        _deliver(url, body, headers)
                        redis_client.set(_SENT + key, str(time.time()))
                        sent += 1
                        break
                    except (urllib.error.URLError, OSError) as exc:
                        log.warning("alert %s to %s failed (try %d of %d): %s", event["id"], url, attempt + 1, _TRIES, exc)
                        if attempt + 1 < _TRIES:
                            time.sleep(0.5 * 2**attempt)
                else:
                    failed += 1
            finally:
                redis_client.delete(_SENDING + key)
    return {"events": len(events), "sent": sent, "failed": failed}
