"""The seed file that fills an empty registry on first start."""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import msgspec

from shared.registry.models import NewExperiment, SiteSettingsBody, validate_fields


class SeedFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    experiments: list[NewExperiment]
    settings: SiteSettingsBody = SiteSettingsBody(experiments_enabled=True)


NO_SEED = "none"
EXAMPLE_SEED = Path("query_api/registry.example.json")
"""ABACUS_REGISTRY_SEED's default: the demo experiments, shipped in this package."""


def example_seed() -> Traversable:
    """The demo seed as package data (importlib.resources): found in a wheel as in a checkout."""
    return resources.files(__package__ or "query_api").joinpath(EXAMPLE_SEED.name)


def find_seed(path: Path) -> Path | Traversable | None:
    """The seed file to use: as given, else (for the default) the one shipped in the package, so
    `abacus serve` seeds the registry from any working directory. ``none``: no seed at all (an
    empty registry), as production deployments start."""
    if str(path) == NO_SEED:
        return None
    if path.exists():
        return path
    if path == EXAMPLE_SEED:
        return example_seed()
    return None


def load_seed(path: Path | Traversable) -> SeedFile:
    try:
        seed = msgspec.json.decode(path.read_bytes(), type=SeedFile)
    except (OSError, msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ValueError(f"registry seed {path}: {exc}") from exc
    for experiment in seed.experiments:
        validate_fields(experiment)
    return seed
