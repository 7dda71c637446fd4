"""The seed file that fills an empty registry on first start."""

from __future__ import annotations

from pathlib import Path

import msgspec

from shared.registry.models import NewExperiment, SiteSettingsBody, validate_fields


class SeedFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    experiments: list[NewExperiment]
    settings: SiteSettingsBody = SiteSettingsBody(experiments_enabled=True)


REPO_ROOT = Path(__file__).resolve().parents[2]


NO_SEED = "none"


def find_seed(path: Path) -> Path | None:
    """The seed file to use: as given, else (for the relative default) beside the code, so
    `abacus serve` seeds the registry from any working directory. ``none``: no seed at all (an
    empty registry), as production deployments start."""
    if str(path) == NO_SEED:
        return None
    if path.exists():
        return path
    if not path.is_absolute() and (REPO_ROOT / path).exists():
        return REPO_ROOT / path
    return None


def load_seed(path: Path) -> SeedFile:
    try:
        seed = msgspec.json.decode(path.read_bytes(), type=SeedFile)
    except (OSError, msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ValueError(f"registry seed {path}: {exc}") from exc
    for experiment in seed.experiments:
        validate_fields(experiment)
    return seed
