"""The Bloom filter of stored sessions: never a false "no", and few false "maybe"s."""

from __future__ import annotations

from shared.rollup.known_sessions import KnownSessions


def test_every_added_session_may_be_contained():
    known = KnownSessions(10_000)
    sessions = [("exp_a" if i % 2 else "exp_b", f"session_{i}") for i in range(10_000)]
    for key in sessions:
        known.add(*key)
    assert all(known.may_contain(*key) for key in sessions)
    assert known.added == 10_000 and not known.overfull


def test_false_positives_are_rare_at_the_planned_size():
    known = KnownSessions(50_000)
    for i in range(50_000):
        known.add("exp_a", f"s{i}")
    false_positives = sum(known.may_contain("exp_a", f"other{i}") for i in range(50_000))
    assert false_positives < 50_000 * 0.01


def test_same_session_in_another_experiment_is_another_key():
    known = KnownSessions(1000)
    known.add("exp_a", "s1")
    misses = sum(not known.may_contain(f"exp_{i}", "s1") for i in range(1000))
    assert misses > 990


def test_overfull_once_far_past_its_size():
    known = KnownSessions(1)
    for i in range(2 * known.capacity + 1):
        known.add("e", str(i))
    assert known.overfull
