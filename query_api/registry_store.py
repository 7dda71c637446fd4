"""Durable registry: every change is a new version row in ClickHouse; after each change the
current state is published to Redis as one snapshot for ingest and the public registry.

Writers serialize on a short Redis lock, so version numbers and ``If-Match`` checks hold across
query-api processes. Everything here is blocking I/O: the API calls it from a worker thread.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator
from datetime import datetime, timezone

import msgspec
import redis

from query_api.registry_seed import SeedFile
from shared import redis_keys
from shared.clickhouse import ClickHouse
from shared.registry.models import (
    Experiment,
    ExperimentFields,
    HistoryEntry,
    NewExperiment,
    RegistrySnapshot,
    SiteSettings,
    validate_fields,
)

_RELEASE_LOCK = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
_LOCK_TTL_MS = 15_000
_LOCK_WAIT_S = 10.0


class RegistryError(Exception):
    """Base of the registry's own errors; the API maps each subclass to one status."""


class NotFound(RegistryError):
    pass


class Conflict(RegistryError):
    pass


class NotArchived(RegistryError):
    """A restore of an experiment that is not archived."""


class VersionMismatch(RegistryError):
    pass


class Busy(RegistryError):
    pass


class NeedsConfirmation(RegistryError):
    """A change with consequences for data already collected; sent again with ``force`` it is made."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class RegistryStore:
    def __init__(self, clickhouse: ClickHouse, redis_client: redis.Redis) -> None:
        self._clickhouse = clickhouse
        self._redis = redis_client
        self.last_published: RegistrySnapshot | None = None

    # ----- reads -------------------------------------------------------------------------
    def ping(self) -> None:
        self._redis.ping()

    def snapshot(self) -> RegistrySnapshot:
        raw = self._redis.get(redis_keys.REGISTRY_SNAPSHOT)
        if raw is None:
            return self.load()
        return msgspec.json.decode(raw, type=RegistrySnapshot)

    def history(self, key: str) -> list[HistoryEntry]:
        found = self.histories([key]).get(key)
        if not found:
            raise NotFound(key)
        return found

    def histories(self, keys: list[str]) -> dict[str, list[HistoryEntry]]:
        """Every version of each experiment asked for, oldest first, in one query (absent keys left out)."""
        rows = (
            self._clickhouse.client()
            .query(
                "SELECT experiment_key, version, action, changed_at, changed_by, archived, definition "
                "FROM abacus.experiment_versions FINAL WHERE experiment_key IN {keys:Array(String)} "
                "ORDER BY experiment_key, version",
                parameters={"keys": keys},
            )
            .result_rows
        )
        found: dict[str, list[HistoryEntry]] = {}
        for key, version, action, changed_at, changed_by, archived, definition in rows:
            found.setdefault(key, []).append(
                HistoryEntry(
                    version=version,
                    action=action,
                    changed_at=_utc(changed_at),
                    changed_by=changed_by,
                    archived=bool(archived),
                    definition=msgspec.json.decode(definition, type=ExperimentFields),
                )
            )
        return found

    # ----- start-up ----------------------------------------------------------------------
    def load(self, seed: SeedFile | None = None) -> RegistrySnapshot:
        """Rebuild the Redis snapshot from ClickHouse, seeding an empty registry first."""
        with self._locked():
            if seed is not None and self._is_empty():
                now = _now()
                self._insert_settings(1, seed.settings.experiments_enabled, "seed", now)
                for experiment in seed.experiments:
                    self._insert_version(experiment.experiment_key, 1, "seed", experiment.fields(), "seed", now)
            return self._publish()

    # ----- writes ------------------------------------------------------------------------
    def create(self, new: NewExperiment, actor: str) -> Experiment:
        validate_fields(new)
        with self._locked():
            if self._latest(new.experiment_key) is not None:
                raise Conflict(new.experiment_key)
            self._insert_version(new.experiment_key, 1, "create", new.fields(), actor, _now())
            return self._publish().find(new.experiment_key)  # type: ignore[return-value]

    def update(self, key: str, fields: ExperimentFields, actor: str, if_match: int | None, force: bool = False) -> Experiment:
        validate_fields(fields)
        with self._locked():
            current = self._current(key, if_match)
            if not force:
                self._confirm_consequences(current, fields)
            self._insert_version(key, current.version + 1, "update", fields, actor, _now())
            return self._publish().find(key)  # type: ignore[return-value]

    def restore(self, key: str, actor: str, if_match: int | None) -> Experiment:
        """Bring an archived experiment back, with the definition it was archived with."""
        with self._locked():
            current = self._latest(key)
            if current is None:
                raise NotFound(key)
            if not current.archived:
                raise NotArchived(f"Experiment {key} is not archived")
            if if_match is not None and if_match != current.version:
                raise VersionMismatch(f"{key} is at version {current.version}, not {if_match}")
            fields = ExperimentFields(**{f: getattr(current, f) for f in ExperimentFields.__struct_fields__})
            self._insert_version(key, current.version + 1, "restore", fields, actor, _now())
            return self._publish().find(key)  # type: ignore[return-value]

    def _confirm_consequences(self, current: Experiment, fields: ExperimentFields) -> None:
        kept = {v.variant_key for v in fields.variants}
        removed = [v.variant_key for v in current.variants if v.variant_key not in kept]
        with_data = self._variants_with_events(current.experiment_key, removed) if removed else []
        if with_data:
            raise NeedsConfirmation(
                "$.variants",
                f"Variant {', '.join(with_data)} of {current.experiment_key} has recorded events: removing it drops it from "
                "the results and the analysis (its events are kept). Send force=true to remove it anyway.",
            )
        before = {v.variant_key: v.allocation for v in current.variants}
        after = {v.variant_key: v.allocation for v in fields.variants}
        # Disabling it in the same change stops the test, so new allocations then start afresh.
        if current.enabled and fields.enabled and before != after:
            raise NeedsConfirmation(
                "$.variants",
                f"{current.experiment_key} is enabled: changing its allocations moves visitors between variants mid-test, "
                "so the sample ratio check and the comparison mix two allocations. Send force=true to change them anyway.",
            )

    def _variants_with_events(self, key: str, variant_keys: list[str]) -> list[str]:
        rows = (
            self._clickhouse.client()
            .query(
                "SELECT DISTINCT variant_key FROM abacus.events WHERE experiment_key = {key:String} "
                "AND variant_key IN {variants:Array(String)}",
                parameters={"key": key, "variants": variant_keys},
            )
            .result_rows
        )
        found = {row[0] for row in rows}
        return [v for v in variant_keys if v in found]

    def archive(self, key: str, actor: str, if_match: int | None) -> Experiment:
        with self._locked():
            current = self._current(key, if_match)
            fields = ExperimentFields(**{f: getattr(current, f) for f in ExperimentFields.__struct_fields__})
            self._insert_version(key, current.version + 1, "archive", fields, actor, _now(), archived=True)
            return self._publish().find(key)  # type: ignore[return-value]

    def set_settings(self, experiments_enabled: bool, actor: str) -> SiteSettings:
        with self._locked():
            current = self._settings()
            if current.experiments_enabled != experiments_enabled or current.version == 0:
                self._insert_settings(current.version + 1, experiments_enabled, actor, _now())
            return self._publish().settings

    # ----- internals ---------------------------------------------------------------------
    def _current(self, key: str, if_match: int | None) -> Experiment:
        current = self._latest(key)
        if current is None or current.archived:
            raise NotFound(key)
        if if_match is not None and if_match != current.version:
            raise VersionMismatch(f"{key} is at version {current.version}, not {if_match}")
        return current

    def _is_empty(self) -> bool:
        client = self._clickhouse.client()
        experiments = client.query("SELECT count() FROM abacus.experiment_versions").result_rows[0][0]
        settings = client.query("SELECT count() FROM abacus.settings_versions").result_rows[0][0]
        return experiments == 0 and settings == 0

    def _latest(self, key: str) -> Experiment | None:
        found = self._experiments(key)
        return found[0] if found else None

    def _experiments(self, key: str | None = None) -> list[Experiment]:
        where = "WHERE experiment_key = {key:String}" if key is not None else ""
        rows = (
            self._clickhouse.client()
            .query(
                "SELECT experiment_key, version, changed_at, changed_by, archived, definition "
                f"FROM abacus.experiment_versions FINAL {where} "
                "ORDER BY experiment_key, version DESC LIMIT 1 BY experiment_key",
                parameters={"key": key} if key is not None else None,
            )
            .result_rows
        )
        experiments = []
        for experiment_key, version, changed_at, changed_by, archived, definition in rows:
            fields = msgspec.json.decode(definition, type=ExperimentFields)
            experiments.append(
                Experiment(
                    experiment_key=experiment_key,
                    version=version,
                    updated_at=_utc(changed_at),
                    updated_by=changed_by,
                    archived=bool(archived),
                    **msgspec.structs.asdict(fields),
                )
            )
        return experiments

    def _settings(self) -> SiteSettings:
        rows = (
            self._clickhouse.client()
            .query(
                "SELECT version, changed_at, changed_by, experiments_enabled "
                "FROM abacus.settings_versions FINAL ORDER BY version DESC LIMIT 1"
            )
            .result_rows
        )
        if not rows:
            return SiteSettings()
        version, changed_at, changed_by, enabled = rows[0]
        return SiteSettings(
            experiments_enabled=bool(enabled), version=version, updated_at=_utc(changed_at), updated_by=changed_by
        )

    def _insert_version(
        self,
        key: str,
        version: int,
        action: str,
        fields: ExperimentFields,
        actor: str,
        at: datetime,
        archived: bool = False,
    ) -> None:
        self._clickhouse.client().insert(
            "abacus.experiment_versions",
            [[key, version, action, at, actor, archived, msgspec.json.encode(fields).decode()]],
            column_names=["experiment_key", "version", "action", "changed_at", "changed_by", "archived", "definition"],
        )

    def _insert_settings(self, version: int, enabled: bool, actor: str, at: datetime) -> None:
        self._clickhouse.client().insert(
            "abacus.settings_versions",
            [[version, at, actor, enabled]],
            column_names=["version", "changed_at", "changed_by", "experiments_enabled"],
        )

    def _publish(self) -> RegistrySnapshot:
        generation = int(self._redis.incr(redis_keys.REGISTRY_GENERATION))
        snapshot = RegistrySnapshot(generation=generation, settings=self._settings(), experiments=self._experiments())
        # Pollers compare the generation key with the generation inside the snapshot they hold,
        # so seeing the new key before the new snapshot only makes them fetch again next poll.
        self._redis.set(redis_keys.REGISTRY_SNAPSHOT, msgspec.json.encode(snapshot))
        self.last_published = snapshot
        return snapshot

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        token = secrets.token_hex(16)
        deadline = time.monotonic() + _LOCK_WAIT_S
        while not self._redis.set(redis_keys.REGISTRY_LOCK, token, nx=True, px=_LOCK_TTL_MS):
            if time.monotonic() > deadline:
                raise Busy("another registry change is in progress")
            time.sleep(0.02)
        try:
            yield
        finally:
            self._redis.eval(_RELEASE_LOCK, 1, redis_keys.REGISTRY_LOCK, token)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)
