"""The Python twin of the SDK's assignment (ingest/assignment.py) on the vectors the JS tests share,
GrowthBook's published cases among them, and on registry definitions."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from ingest.assignment import assign, assignments, bucket_ranges, choose_variant, hash, is_eligible, route_matches
from shared.registry.models import Experiment, RegistrySnapshot, SiteSettings, Variant
from tests.conftest import REPO

VECTORS = json.loads((REPO / "sdk" / "test" / "vectors.json").read_text())


@pytest.mark.parametrize(("seed", "value", "version", "expected"), VECTORS["growthbook_hash"])
def test_hash_matches_growthbook_published_cases(seed, value, version, expected):
    assert hash(seed, value, version) == expected


def test_version_2_is_the_default():
    assert hash("seed", "a") == hash("seed", "a", 2) == 0.0505


@pytest.mark.parametrize(("name", "args", "expected"), VECTORS["growthbook_bucket_ranges"])
def test_bucket_ranges_follow_growthbook_rules(name, args, expected):
    ranges = bucket_ranges(*args)
    flat = [bound for bounds in ranges for bound in bounds]
    assert flat == pytest.approx([bound for bounds in expected for bound in bounds], abs=1e-9), name
    assert len(ranges) == len(expected)


@pytest.mark.parametrize(("name", "n", "ranges", "expected"), VECTORS["growthbook_choose_variation"])
def test_choose_variant_takes_the_first_range_holding_n(name, n, ranges, expected):
    assert choose_variant(n, ranges) == expected, name


@pytest.mark.parametrize(("route", "path", "expected"), VECTORS["routes"])
def test_route_matching(route, path, expected):
    assert route_matches(route, path) is expected


@pytest.mark.parametrize(("seed", "visitor", "allocations", "n", "index"), VECTORS["assignments"])
def test_assignments_agree_with_the_vectors_node_computed(seed, visitor, allocations, n, index):
    assert hash(seed, visitor, 2) == n
    weights = [a / 100 for a in allocations]
    assert choose_variant(n, bucket_ranges(len(weights), 1, weights)) == index


def test_hash_walks_utf16_code_units():
    # U+1F600 is the surrogate pair D83D DE00 in UTF-16, which is what JavaScript hashes.
    assert hash("s", "\U0001f600", 2) == hash("s", "\ud83d\ude00", 2)
    assert hash("s", "\U0001f600", 2) != hash("s", "\ud83d", 2)


def experiment(key: str = "hero_test", **overrides: object) -> Experiment:
    fields: dict[str, object] = {
        "experiment_key": key,
        "name": key,
        "description": "",
        "cookie_name": f"exp_{key}",
        "enabled": True,
        "eligible_routes": ["/"],
        "variants": [Variant("control", "A", 50, True), Variant("treatment", "B", 50)],
        "version": 1,
        "updated_at": datetime.now(timezone.utc),
        "updated_by": "test",
    }
    fields.update(overrides)
    return Experiment(**fields)  # type: ignore[arg-type]


def test_assignment_uses_allocations_as_weights_in_definition_order():
    uneven = experiment(variants=[Variant("control", "A", 10, True), Variant("never", "N", 0), Variant("most", "M", 90)])
    chosen = [assign(uneven, f"visitor-{i}") for i in range(2000)]
    assert "never" not in chosen
    assert 0.07 < chosen.count("control") / len(chosen) < 0.13
    for i, variant in enumerate(chosen[:50]):
        n = hash("hero_test", f"visitor-{i}", 2)
        assert variant == ("control" if n < 0.1 else "most")


def test_hash_seed_replaces_the_key_as_seed():
    plain, seeded = experiment(), experiment(hash_seed="other_seed")
    visitors = [f"v{i}" for i in range(200)]
    assert [assign(seeded, v) for v in visitors] == [assign(experiment("other_seed"), v) for v in visitors]
    assert [assign(plain, v) for v in visitors] != [assign(seeded, v) for v in visitors]


def test_a_cookie_naming_an_existing_variant_is_honoured_else_reassigned():
    hero = experiment()
    hashed = assign(hero, "v1")
    other = "treatment" if hashed == "control" else "control"
    assert assign(hero, "v1", sticky=other) == other
    assert assign(hero, "v1", sticky="deleted_variant") == hashed


def test_eligibility_without_routes_is_every_page():
    assert is_eligible(experiment(eligible_routes=[]), "/anything")
    assert not is_eligible(experiment(eligible_routes=["/a", "/b/*"]), "/c")
    assert is_eligible(experiment(eligible_routes=["/a", "/b/*"]), "/b/x")


def test_assignments_cover_enabled_eligible_experiments_and_the_kill_switch():
    experiments = [
        experiment("hero_test"),
        experiment("pricing_test", eligible_routes=["/pricing"]),
        experiment("off_test", enabled=False),
        experiment("gone_test", archived=True),
    ]
    on = RegistrySnapshot(generation=1, settings=SiteSettings(), experiments=experiments)
    chosen = assignments(on, "v1", "/", {})
    assert chosen == {"hero_test": assign(experiments[0], "v1")}
    assert assignments(on, "v1", "/pricing/", {"exp_hero_test": "treatment"}) == {"pricing_test": assign(experiments[1], "v1")}
    assert assignments(on, "v1", "/", {"exp_hero_test": "treatment"}) == {"hero_test": "treatment"}
    off = RegistrySnapshot(generation=2, settings=SiteSettings(experiments_enabled=False), experiments=experiments)
    assert assignments(off, "v1", "/", {}) == {}
