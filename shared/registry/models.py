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
