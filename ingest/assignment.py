"""Variant assignment, the Python twin of the browser SDK's (``sdk/abacus.js``).

Hashing and bucket ranges follow GrowthBook's published SDK rules (``packages/sdk-js/src/util.ts``
in growthbook/growthbook: ``hash``, ``getBucketRanges``, ``chooseVariation``), so an assignment
can be cross-checked against a well-known implementation; ``sdk/test/vectors.json`` is checked by
both languages, GrowthBook's own test cases included. ``hash``, ``bucket_ranges`` and
``choose_variant`` are the names the JS exposes as ``Abacus.hash``, ``bucketRanges`` and
``chooseVariant``; ``hash`` shadows the builtin here on purpose, to keep the names identical.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

from shared.registry.models import Experiment, RegistrySnapshot

HASH_VERSION = 2
_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193


def fnv1a32(text: str) -> int:
    """FNV-1a, 32 bits, over UTF-16 code units: what JavaScript's ``charCodeAt`` walks."""
    encoded = text.encode("utf-16-le", "surrogatepass")
    value = _FNV_OFFSET
    for unit in struct.unpack(f"<{len(encoded) // 2}H", encoded):
        value = ((value ^ unit) * _FNV_PRIME) & 0xFFFFFFFF
    return value


def hash(seed: str, value: str, version: int = HASH_VERSION) -> float | None:
    """A number in [0, 1) for ``value`` under ``seed``; None for an unknown version."""
    if version == 2:
        return fnv1a32(str(fnv1a32(seed + value))) % 10000 / 10000
    if version == 1:
        return fnv1a32(value + seed) % 1000 / 1000
    return None


def bucket_ranges(count: int, coverage: float | None = 1.0, weights: Sequence[float] | None = None) -> list[tuple[float, float]]:
    """One [start, end) range per variant. Coverage is clamped to [0, 1]; weights that are missing,
    of the wrong length or do not sum to within [0.99, 1.01] are replaced by equal weights."""
    coverage = 1.0 if coverage is None else min(max(coverage, 0.0), 1.0)
    equal = [1 / count] * count if count > 0 else []
    chosen = list(weights) if weights is not None and len(weights) == count else equal
    total = 0.0
    for weight in chosen:  # left to right from 0, as JavaScript's reduce adds them
        total += weight
    if total < 0.99 or total > 1.01:
        chosen = equal
    ranges = []
    cumulative = 0.0
    for weight in chosen:
        start = cumulative
        cumulative += weight
        ranges.append((start, start + coverage * weight))
    return ranges


def choose_variant(n: float, ranges: Sequence[Sequence[float]]) -> int:
    """Index of the first range with start <= n < end; -1 when none holds n."""
    for index, (start, end) in enumerate(ranges):
        if start <= n < end:
            return index
    return -1


def route_matches(route: str, path: str) -> bool:
    """An eligible route matches a path exactly, a trailing slash ignored on both; a route ending in
    ``*`` matches every path that starts with what precedes it (``/blog/*`` also matches ``/blog``)."""
    if route.endswith("*"):
        prefix = route[:-1]
        return path.startswith(prefix) or _trimmed(path) == _trimmed(prefix)
    return _trimmed(route) == _trimmed(path)


def _trimmed(path: str) -> str:
    return path.rstrip("/") or "/"


def is_eligible(experiment: Experiment, path: str) -> bool:
    """An experiment without eligible routes runs on every page."""
    return not experiment.eligible_routes or any(route_matches(route, path) for route in experiment.eligible_routes)


def hashed_variant(experiment: Experiment, visitor_id: str) -> str | None:
    seed = experiment.hash_seed if isinstance(experiment.hash_seed, str) else experiment.experiment_key
    n = hash(seed, visitor_id, HASH_VERSION)
    weights = [variant.allocation / 100 for variant in experiment.variants]
    index = choose_variant(n if n is not None else -1.0, bucket_ranges(len(weights), 1.0, weights))
    return experiment.variants[index].variant_key if index >= 0 else None


def assign(experiment: Experiment, visitor_id: str, sticky: str | None = None) -> str | None:
    """The visitor's variant: ``sticky`` (the variant cookie) when it names a variant that still
    exists, otherwise the hash's."""
    if sticky is not None and any(variant.variant_key == sticky for variant in experiment.variants):
        return sticky
    return hashed_variant(experiment, visitor_id)


def assignments(snapshot: RegistrySnapshot, visitor_id: str, path: str, cookies: Mapping[str, str]) -> dict[str, str]:
    """{experiment_key: variant_key} for the enabled experiments eligible on ``path``; nothing while
    the kill switch is off. ``cookies`` are the visitor's (variant cookies are honoured)."""
    if not snapshot.settings.experiments_enabled:
        return {}
    chosen = {}
    for experiment in snapshot.active():
        if experiment.enabled and is_eligible(experiment, path):
            variant = assign(experiment, visitor_id, cookies.get(experiment.cookie_name))
            if variant is not None:
                chosen[experiment.experiment_key] = variant
    return chosen
