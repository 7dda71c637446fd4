"""Settings for every Abacus role, read from ``ABACUS_*`` environment variables.

Nothing here runs at import time: callers build a ``Settings`` with ``Settings.from_env()`` (the
CLI does) or construct one directly (tests do), so importing a module never depends on the
environment. Each value is converted to its field's type by ``msgspec.convert``; one it cannot
convert is refused with a ``SettingsError`` naming the variable and what it expects. The README's
settings table is checked against ``settings_doc()`` (the fields' docstrings) by a test.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import socket
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import msgspec


class SettingsError(ValueError):
    """A setting has a value Abacus cannot use; the message names the variable."""


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    redis_url: str | None = None
    """ABACUS_REDIS_URL: Redis/Valkey server (redis:// or rediss://). Unset under `abacus serve`: an embedded Valkey is started."""
    clickhouse_url: str | None = None
    """ABACUS_CLICKHOUSE_URL: ClickHouse server (http(s)://user:pass@host:8123). Unset under `abacus serve`: chdb://DATA_DIR/clickhouse."""
    data_dir: Path = Path(".abacus")
    """ABACUS_DATA_DIR: where `abacus serve` keeps Valkey and chDB data and the generated JWT secret (also --data-dir)."""
    redis_cluster: bool = False
    """ABACUS_REDIS_CLUSTER: whether ABACUS_REDIS_URL names a node of a Redis/Valkey Cluster (true/false); every process then uses redis-py's cluster client and every key carries a hash tag."""
    redis_sentinel_master: str = ""
    """ABACUS_REDIS_SENTINEL_MASTER: when set, ABACUS_REDIS_URL names a Sentinel (redis://host:26379) and Abacus talks to the primary Sentinel reports for this master name."""
    redis_wait_replicas: int = 0
    """ABACUS_REDIS_WAIT_REPLICAS: ingest answers 202 only once this many replicas hold the append (Redis WAIT, on the same connection right after the XADD); fewer within ABACUS_REDIS_WAIT_TIMEOUT_MS is a 503 (clients resend the same event_id). 0: no WAIT, a crashed primary can lose its last acknowledged appends ("Operating at scale")."""
    redis_wait_timeout_ms: int = 1000
    """ABACUS_REDIS_WAIT_TIMEOUT_MS: longest ingest waits for those replicas per append (1-4000)."""
    stream_shards: int = 1
    """ABACUS_STREAM_SHARDS: streams the events are split into (by a hash of session_id), each with its own hash tag so a Redis Cluster spreads them over its primaries; every worker and roller consumes all of them. 1 keeps the single stream ABACUS_STREAM. Same value on every process; change it only with the stream drained (README, "Operating at scale")."""
    stream: str = "abacus:events"
    """ABACUS_STREAM: Redis stream that ingest appends beacons to and workers read."""
    dead_letter_stream: str = "abacus:events:dead"
    """ABACUS_DEAD_LETTER_STREAM: stream that receives entries that cannot be inserted."""
    consumer_group: str = "abacus-workers"
    """ABACUS_CONSUMER_GROUP: consumer group shared by all workers."""
    consumer_name: str = ""
    """ABACUS_CONSUMER_NAME: this worker's consumer name; keep it stable across restarts of one replica (default host-pid)."""
    batch_size: int = 5000
    """ABACUS_BATCH_SIZE: events (rows) per ClickHouse insert; a batch closes once it holds this many."""
    batch_wait_ms: int = 500
    """ABACUS_BATCH_WAIT_MS: longest a worker holds a partial batch before inserting it."""
    max_deliveries: int = 5
    """ABACUS_MAX_DELIVERIES: deliveries after which a failing entry goes to the dead-letter stream."""
    claim_idle_ms: int = 60000
    """ABACUS_CLAIM_IDLE_MS: a pending entry idle this long belongs to a dead consumer and is claimed (XAUTOCLAIM)."""
    rollup: bool = True
    """ABACUS_ROLLUP: whether this worker (or serve) may be a roller keeping the results rollup current (true/false); each share of it is folded by one roller at a time, elected by a Redis lock."""
    rollup_cache_sessions: int = 200000
    """ABACUS_ROLLUP_CACHE_SESSIONS: session states the roller keeps in memory; older ones are read back from ClickHouse when a session returns."""
    rollup_idle_ms: int = 200
    """ABACUS_ROLLUP_IDLE_MS: how long the roller waits before looking again when the workers have stored nothing new."""
    rollup_max_lag_ms: int = 10000
    """ABACUS_ROLLUP_MAX_LAG_MS: results come from the rollup only while it has folded every event the workers stored more than this long ago (and the gap is measured); otherwise from the events."""
    rollup_shards: int = 1
    """ABACUS_ROLLUP_SHARDS: shares of experiments (by a hash of experiment_key) the rollup is split into; each roller process folds its fair number of them, so more rollers fold faster. Same value on every process; changing it rebuilds the rollup."""
    cors_origins: tuple[str, ...] = ()
    """ABACUS_CORS_ORIGINS: comma-separated origins allowed to send beacons from browsers ("*" for any)."""
    registry_seed: Path = Path("query_api/registry.example.json")
    """ABACUS_REGISTRY_SEED: JSON file that seeds the experiment registry when it has never been written (the default is read from the installed package when no such file is in the working directory; `none`: start empty, as docker-compose.yml and the Kubernetes base do; the demo experiments are for `abacus serve`)."""
    registry_poll_ms: int = 500
    """ABACUS_REGISTRY_POLL_MS: how often each process checks Redis for a newer registry snapshot."""
    jwt_secret: str | None = None
    """ABACUS_JWT_SECRET: HS256 secret (at least 32 bytes) for admin/analyst tokens."""
    jwt_algorithm: str = "HS256"
    """ABACUS_JWT_ALGORITHM: HS256, RS256 or ES256; pinned, tokens with another alg are refused."""
    jwt_public_key: str | None = None
    """ABACUS_JWT_PUBLIC_KEY: PEM public key (or a path to one) for RS256/ES256."""
    jwt_jwks_url: str | None = None
    """ABACUS_JWT_JWKS_URL: JWKS endpoint for RS256/ES256 keys, instead of a fixed public key."""
    jwt_issuer: str | None = None
    """ABACUS_JWT_ISSUER: when set, tokens must carry this `iss`."""
    jwt_audience: str | None = None
    """ABACUS_JWT_AUDIENCE: when set, tokens must carry this `aud`."""
    jwt_leeway_s: int = 30
    """ABACUS_JWT_LEEWAY_S: clock skew tolerated on `exp`/`nbf`/`iat`, in seconds."""
    http_max_connections: int = 1024
    """ABACUS_HTTP_MAX_CONNECTIONS: open client connections each server process serves at once (serve, ingest, query-api); more wait in the backlog. Idle ones are closed after ABACUS_HTTP_HEADER_TIMEOUT_MS, so a flood of silent connections cannot hold them all."""
    http_backlog: int = 1024
    """ABACUS_HTTP_BACKLOG: connections the kernel queues for the server while all ABACUS_HTTP_MAX_CONNECTIONS are busy."""
    http_header_timeout_ms: int = 5000
    """ABACUS_HTTP_HEADER_TIMEOUT_MS: a connection must send a complete request header within this long of opening, or of its previous answer (the keep-alive idle timeout), or it is closed."""
    http_body_timeout_ms: int = 10000
    """ABACUS_HTTP_BODY_TIMEOUT_MS: a request body must arrive within this long of its header, or the answer is 408 and the connection closed (serve and query-api)."""
    http_keep_alive: bool = True
    """ABACUS_HTTP_KEEP_ALIVE: whether connections stay open for further requests (true/false); idle ones close after ABACUS_HTTP_HEADER_TIMEOUT_MS."""
    sql_max_execution_s: int = 30
    """ABACUS_SQL_MAX_EXECUTION_S: longest an analyst's `POST /api/v1/sql` query or an export may run, in seconds; ClickHouse stops it then."""
    sql_max_result_rows: int = 1000000
    """ABACUS_SQL_MAX_RESULT_ROWS: most rows a `POST /api/v1/sql` answer may have; a query that would return more is stopped with 422 (exports are not capped)."""
    sql_max_memory_bytes: int = 2000000000
    """ABACUS_SQL_MAX_MEMORY_BYTES: most memory one `POST /api/v1/sql` query or export may use in ClickHouse, in bytes."""
    clickhouse_analyst_password: str | None = None
    """ABACUS_CLICKHOUSE_ANALYST_PASSWORD: on a ClickHouse server, `abacus migrate` creates the read-only user `abacus_analyst` with this password (the role `abacus_readonly` is created either way)."""
    api_url: str = "http://127.0.0.1:8000"
    """ABACUS_API_URL: where `abacus sql` sends its query (the query API or `abacus serve`)."""
    token: str | None = None
    """ABACUS_TOKEN: bearer token `abacus sql` sends when no --token is given."""
    clickhouse_cluster: str = ""
    """ABACUS_CLICKHOUSE_CLUSTER: when set, `abacus migrate` creates the tables ON CLUSTER this name: Replicated*MergeTree local tables (`*_local`) and Distributed tables over them, sharded by cityHash64(experiment_key, session_id). Empty: plain tables on one server."""
    retention_days: int = 0
    """ABACUS_RETENTION_DAYS: events older than this many days (by received_at) are deleted from abacus.events by a ClickHouse TTL that `abacus migrate` and serve's start set (0: kept for ever). The all-time rollup keeps its totals; see Operations."""
    jobs_redis_url: str | None = None
    """ABACUS_JOBS_REDIS_URL: plain Redis/Valkey (redis://, not a cluster) where rq keeps the background jobs' queue and state, for `abacus jobs`, the query API and serve (unset: ABACUS_REDIS_URL, which must then not be a cluster: with ABACUS_REDIS_CLUSTER this is required)."""
    jobs_in_serve: bool = True
    """ABACUS_JOBS_IN_SERVE: whether `abacus serve` runs a background-jobs worker in a thread (true/false); production runs `abacus jobs` instead."""
    verify_hour_utc: int = 3
    """ABACUS_VERIFY_HOUR_UTC: hour (UTC) after which the processes running jobs enqueue the day's rollup verification, once a day between them (24: never)."""
    export_dir: str = ""
    """ABACUS_EXPORT_DIR: where export jobs write their files and the query API reads them for download (empty: DATA_DIR/exports); with `abacus jobs` and `abacus query-api` apart, a volume both mount."""
    alert_webhooks: tuple[str, ...] = ()
    """ABACUS_ALERT_WEBHOOKS: comma-separated URLs that get a signed POST, once per event, when an experiment shows a sample ratio mismatch or a treatment reaches a significant win or loss."""
    alert_secret: str | None = None
    """ABACUS_ALERT_SECRET: HMAC-SHA256 key for the webhooks' X-Abacus-Signature header."""
    alert_check_s: int = 300
    """ABACUS_ALERT_CHECK_S: how often the processes running jobs enqueue the alert check (0: never; POST /api/v1/admin/alerts/check runs one)."""
    metrics_port: int = 0
    """ABACUS_METRICS_PORT: port where `abacus worker`, `abacus rollup` and `abacus jobs` serve /metrics, /healthz and /readyz (0: none; also --metrics-port). Ingest, the query API and serve answer them on their own port."""
    metrics_host: str = "127.0.0.1"
    """ABACUS_METRICS_HOST: address that port listens on (0.0.0.0 in containers, for Prometheus and the probes)."""
    log_level: str = "INFO"
    """ABACUS_LOG_LEVEL: Python logging level."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for name, kind in _field_types().items():
            raw = env.get(env_name(name))
            if raw is None or raw == "":
                continue
            values[name] = _parse(name, kind, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.refuse_conflicts()
        return settings

    def refuse_conflicts(self) -> None:
        """Settings that are each valid but exclude each other: refused when they are read, so
        every command stops with the message instead of a process failing later on its own."""
        if self.redis_cluster and self.redis_sentinel_master:
            raise SettingsError(
                "ABACUS_REDIS_CLUSTER and ABACUS_REDIS_SENTINEL_MASTER exclude each other: a cluster fails over by itself"
            )

    @property
    def hash_tagged(self) -> bool:
        """Whether Redis keys carry hash tags: on a cluster, or once the stream is sharded."""
        return self.redis_cluster or self.stream_shards > 1

    @property
    def worker_name(self) -> str:
        return self.consumer_name or f"{socket.gethostname()}-{os.getpid()}"


def env_name(field_name: str) -> str:
    return "ABACUS_" + field_name.upper()


_BOOL_WORDS = {"yes": "true", "on": "true", "no": "false", "off": "false"}
"""Spellings accepted beside msgspec's own (true/false, 1/0, any case)."""
Count = Annotated[int, msgspec.Meta(ge=0)]
"""Every integer setting is a count, a size or a duration: none may be negative."""


@functools.cache
def _field_types() -> dict[str, Any]:
    """Each field's type as ``msgspec.convert`` is given it (the annotations are strings here)."""
    hints = typing.get_type_hints(Settings)
    return {field.name: Count if hints[field.name] is int else hints[field.name] for field in dataclasses.fields(Settings)}


def _expected(kind: object) -> str:
    if kind is Count:
        return "a whole number >= 0"
    if kind is bool:
        return "true or false (also 1/0, yes/no, on/off)"
    return str(kind)


def _parse(name: str, kind: object, raw: str) -> object:
    value: object = raw
    if kind is Count:
        value = raw.strip()
    elif kind is bool:
        value = _BOOL_WORDS.get(raw.strip().lower(), raw.strip())
    elif typing.get_origin(kind) is tuple:  # comma-separated
        value = [part.strip() for part in raw.split(",") if part.strip()]
    try:
        return msgspec.convert(value, kind, strict=False, dec_hook=_from_text)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"{env_name(name)}={raw!r}: expected {_expected(kind)} ({exc})") from exc


def _from_text(kind: type, value: Any) -> Any:
    """Types msgspec does not know (``Path``) are built from the variable's text."""
    if kind is Path and isinstance(value, str):
        return Path(value)
    raise NotImplementedError(f"no conversion to {kind}")


def settings_doc() -> list[tuple[str, str, str]]:
    """(variable, default, description) for every setting, in declaration order, for the README."""
    import inspect

    source = inspect.getsource(Settings)
    rows = []
    for field in dataclasses.fields(Settings):
        marker = f'"""{env_name(field.name)}: '
        start = source.index(marker) + len(marker)
        description = source[start : source.index('"""', start)]
        default = field.default
        if isinstance(default, tuple):
            default = ",".join(default)
        elif isinstance(default, bool):
            default = str(default).lower()
        rows.append((env_name(field.name), "" if default is None else str(default), description))
    return rows
