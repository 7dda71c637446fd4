"""The seed file that fills an empty registry on first start."""

from __future__ import annotations

from pathlib import Path

import msgspec

from shared.registry.models import NewExperiment, SiteSettingsBody, validate_fields


class SeedFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    experiments: list[NewExperiment]
    settings: SiteSettingsBody = SiteSettingsBody(experiments_enabled=True)


def load_seed(path: Path) -> SeedFile:
    try:
        seed = msgspec.json.decode(path.read_bytes(), type=SeedFile)
    except (OSError, msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ValueError(f"registry seed {path}: {exc}") from exc
    for experiment in seed.experiments:
        validate_fields(experiment)
    return seed
