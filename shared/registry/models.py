"""Registry types. Validation that msgspec's ``Meta`` can express lives on the fields; the rest
(exactly one control, allocations summing to 100, unique variant keys) in ``validate_fields``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from msgspec import Meta

Key = Annotated[str, Meta(pattern=r"^[a-z0-9_]{1,64}$")]
# RFC 6265 cookie-name: an RFC 7230 token.
CookieName = Annotated[str, Meta(pattern=r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}$")]
Route = Annotated[str, Meta(pattern=r"^/", max_length=2048)]
Allocation = Annotated[int, Meta(ge=0, le=100)]
HashSeed = Annotated[str, Meta(min_length=1, max_length=200)]
# A metric a definition can name: an event type (the binomial metric "exposed sessions with at least
# one such event"), "numerator/denominator" event types (a ratio metric), or "value_per_session".
EventName = r"[a-z][a-z0-9_]{0,63}"
MetricName = Annotated[str, Meta(pattern=rf"^{EventName}(/{EventName})?$", max_length=129)]
PlannedSessions = Annotated[int, Meta(ge=2, le=10**12)]
TargetMde = Annotated[float, Meta(gt=0, le=10)]
CapPercentile = Annotated[float, Meta(gt=0, lt=100)]

DEFAULT_PRIMARY_METRIC = "conversion"
DEFAULT_GUARDRAIL_METRICS = ("value_per_session",)
VALUE_METRIC = "value_per_session"


class Variant(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    variant_key: Key
    label: Annotated[str, Meta(min_length=1, max_length=200)]
    allocation: Allocation
    is_control: bool = False


class ExperimentFields(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What an admin sends with PUT: everything but the key, which is in the path."""

    name: Annotated[str, Meta(min_length=1, max_length=200)]
    description: Annotated[str, Meta(max_length=5000)] = ""
    cookie_name: CookieName
    enabled: bool = True
    eligible_routes: Annotated[list[Route], Meta(max_length=200)] = []
    variants: Annotated[list[Variant], Meta(min_length=2, max_length=26)]
    # Optional: seeds the variant hash instead of the key (see ingest/assignment.py). UNSET is left
    # out of every encoding, so definitions, answers and stored rows without one are unchanged.
    hash_seed: HashSeed | msgspec.UnsetType = msgspec.UNSET
    # Analysis settings (not sent to pages). Sequential tuning: the whole experiment's planned exposed
    # sessions, or a target relative minimum detectable effect (0.05 = +5 %) they are derived from.
    planned_sessions: PlannedSessions | None = None
    target_mde: TargetMde | None = None
    primary_metric: MetricName = DEFAULT_PRIMARY_METRIC
    guardrail_metrics: Annotated[list[MetricName], Meta(max_length=10)] = msgspec.field(
        default_factory=lambda: list(DEFAULT_GUARDRAIL_METRICS)
    )
    # Winsorize value per session at this percentile (e.g. 99) of the positive per-session values.
    value_cap_percentile: CapPercentile | None = None


class NewExperiment(ExperimentFields, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What an admin sends with POST."""

    experiment_key: Key

    def fields(self) -> ExperimentFields:
        return ExperimentFields(**{f: getattr(self, f) for f in ExperimentFields.__struct_fields__})


class Experiment(msgspec.Struct, frozen=True, kw_only=True):
    """A stored definition: the public shape plus its version metadata."""

    experiment_key: str
    name: str
    description: str
    cookie_name: str
    enabled: bool
    eligible_routes: list[str]
    variants: list[Variant]
    version: int
    updated_at: datetime
    updated_by: str
    archived: bool = False
    hash_seed: str | msgspec.UnsetType = msgspec.UNSET
    planned_sessions: int | None = None
    target_mde: float | None = None
    primary_metric: str = DEFAULT_PRIMARY_METRIC
    guardrail_metrics: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_GUARDRAIL_METRICS))
    value_cap_percentile: float | None = None

    def public(self) -> PublicExperiment:
        return PublicExperiment(
            experiment_key=self.experiment_key,
            name=self.name,
            description=self.description,
            cookie_name=self.cookie_name,
            enabled=self.enabled,
            eligible_routes=self.eligible_routes,
            variants=self.variants,
            hash_seed=self.hash_seed,
        )


class PublicExperiment(msgspec.Struct, frozen=True, kw_only=True):
    experiment_key: str
    name: str
    description: str
    cookie_name: str
    enabled: bool
    eligible_routes: list[str]
    variants: list[Variant]
    hash_seed: str | msgspec.UnsetType = msgspec.UNSET


class SiteSettingsBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    experiments_enabled: bool


class SiteSettings(msgspec.Struct, frozen=True, kw_only=True):
    experiments_enabled: bool = True
    version: int = 0
    updated_at: datetime | None = None
    updated_by: str = ""


class HistoryEntry(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    action: str
    changed_at: datetime
    changed_by: str
    definition: ExperimentFields
    archived: bool


class RegistrySnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """Everything ingest and the public registry need, published to Redis as one value."""

    generation: int
    settings: SiteSettings
    experiments: list[Experiment]  # sorted by experiment_key, archived ones included

    def active(self) -> list[Experiment]:
        return [e for e in self.experiments if not e.archived]

    def find(self, key: str) -> Experiment | None:
        for experiment in self.experiments:
            if experiment.experiment_key == key:
                return experiment
        return None


class DefinitionError(ValueError):
    """A definition breaks a rule; ``field`` is the JSON path of the offending value."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{message} - at `{field}`")
        self.field = field


def validate_fields(fields: ExperimentFields) -> None:
    keys = [v.variant_key for v in fields.variants]
    for index, key in enumerate(keys):
        if key in keys[:index]:
            raise DefinitionError(f"$.variants[{index}].variant_key", f"Duplicate variant key {key!r}")
    controls = [v for v in fields.variants if v.is_control]
    if len(controls) != 1:
        raise DefinitionError("$.variants", f"Expected exactly one control variant, got {len(controls)}")
    total = sum(v.allocation for v in fields.variants)
    if total != 100:
        raise DefinitionError("$.variants", f"Allocations must sum to 100, got {total}")
    validate_analysis_fields(fields)


def validate_analysis_fields(fields: ExperimentFields) -> None:
    """Rules across the analysis settings that a field's own constraint cannot state."""
    if fields.planned_sessions is not None and fields.target_mde is not None:
        raise DefinitionError("$.target_mde", "Give planned_sessions or target_mde, not both (one is derived from the other)")
    metric_problem(fields.primary_metric, "$.primary_metric")
    for index, name in enumerate(fields.guardrail_metrics):
        path = f"$.guardrail_metrics[{index}]"
        metric_problem(name, path)
        if name == fields.primary_metric:
            raise DefinitionError(
                path,
                f"{name!r} is already the primary metric (guardrail_metrics defaults to "
                f"{list(DEFAULT_GUARDRAIL_METRICS)}: send another list, or [])",
            )
        if name in fields.guardrail_metrics[:index]:
            raise DefinitionError(path, f"Duplicate guardrail metric {name!r}")


def metric_problem(name: str, path: str) -> None:
    """Raise DefinitionError for a metric name that matches the pattern but measures nothing."""
    parts = name.split("/")
    if VALUE_METRIC in parts and len(parts) > 1:
        raise DefinitionError(path, f"{VALUE_METRIC} is a metric of its own, not an event type of a ratio")
    if "impression" in parts and len(parts) == 1:
        raise DefinitionError(
            path,
            "Every exposed session has an impression: 'impression' is not a metric (try a ratio such as cta_click/impression)",
        )
    if len(parts) == 2 and parts[0] == parts[1]:
        raise DefinitionError(path, f"A ratio of {parts[0]} to itself is always 1")
