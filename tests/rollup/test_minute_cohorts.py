"""The rollup's per-minute cohorts against the events, on chDB: phases that start at arbitrary
instants (their cohorts in whole minutes), windows of whole minutes and the daily and hourly time
series give exactly what the same questions computed from abacus.events give."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from query_api.results_phases import cohort_start, fetch_phase_totals
from query_api.results_query import fetch_event_buckets, fetch_rollup_totals, fetch_rollups
from query_api.results_sources import phase_buckets_from_rollup, phase_totals_from_rollup
from query_api.stats.phases import Phase
from tests.helpers import EVENT_COLUMNS
from worker.rollup_store import rebuild_from_events

KEY = "exp"
START = datetime(2026, 5, 27, 22, 0, tzinfo=timezone.utc)
TYPES = ("impression", "impression", "cta_click", "form_start", "form_submit", "conversion")


def _traffic(rng: random.Random, sessions: int = 400) -> list[list]:
    """Sessions first seen over four hours across midnight, some only later exposed, some in two
    variants, with repeated beacons; many in the minutes the phases below start in."""
    rows = []
    hot = [START + timedelta(minutes=61, seconds=30), START + timedelta(minutes=150, seconds=12.345)]
    for s in range(sessions):
        first = (
            rng.choice(hot) + timedelta(seconds=rng.uniform(-40, 40))
            if s % 3 == 0
            else START + timedelta(hours=rng.uniform(0, 4))
        )
        variants = ["control", "treat"] if s % 17 == 0 else [("control", "treat")[s % 2]]
        for index in range(rng.randrange(1, 6)):
            kind = "impression" if index == 0 and s % 11 else rng.choice(TYPES)
            at = first + timedelta(seconds=index * rng.uniform(0, 300))
            value = float(rng.choice([5, 20, 300])) if kind == "conversion" else None
            row = [f"e{s}-{index}", KEY, rng.choice(variants), f"s{s}", kind, "/", value, "{}", None, at]
            rows.append(row)
            if rng.random() < 0.1:
                rows.append(list(row))  # a beacon stored twice counts once
    return rows


@pytest.fixture()
def folded(clean_clickhouse):
    client = clean_clickhouse.client()
    client.insert("abacus.events", _traffic(random.Random(5)), column_names=EVENT_COLUMNS)
    rebuild_from_events(client)
    return client


def _phases() -> list[Phase]:
    first_change = START + timedelta(minutes=61, seconds=30)  # cuts a minute with sessions on both sides
    second_change = START + timedelta(minutes=150, seconds=12.345)
    bounds = [START - timedelta(days=1), first_change, second_change, None]
    return [Phase(i + 1, bounds[i], bounds[i + 1], {"control": 50, "treat": 50}) for i in range(3)]  # type: ignore[arg-type]


def test_phases_starting_inside_minutes_equal_the_events(folded):
    phases = _phases()
    from_rollup = phase_totals_from_rollup(folded, KEY, phases, None, None)
    from_events = fetch_phase_totals(folded, KEY, phases, None, None)
    assert from_rollup.source == "rollup"
    assert all(phase for phase in from_events), "every phase has sessions: the test would prove little otherwise"
    assert from_rollup.by_phase == from_events


def test_the_minute_of_a_change_counts_in_the_phase_before(folded):
    change = START + timedelta(minutes=61, seconds=30)
    assert cohort_start(change) == START + timedelta(minutes=62)
    assert cohort_start(START + timedelta(minutes=62)) == START + timedelta(minutes=62), "a whole minute stays"
    minute = START + timedelta(minutes=61)
    inside_before = fetch_rollups(folded, [KEY], minute, change)
    inside_after = fetch_rollups(folded, [KEY], change, minute + timedelta(minutes=1))
    assert all(sum(t.exposed_sessions for t in part.values()) for part in (inside_before, inside_after)), "sessions on both sides"
    first_phase = phase_totals_from_rollup(folded, KEY, _phases(), None, None).by_phase[0]
    up_to_the_minutes_end = fetch_rollups(folded, [KEY], None, minute + timedelta(minutes=1))
    for variant in ("control", "treat"):
        assert first_phase[variant].exposed_sessions == up_to_the_minutes_end[(KEY, variant)].exposed_sessions


def test_windows_of_whole_minutes_equal_the_events(folded):
    for start, end in [
        (None, None),
        (START + timedelta(minutes=61), START + timedelta(minutes=62)),
        (START + timedelta(hours=1), START + timedelta(hours=3)),
        (START + timedelta(hours=2), None),
        (None, START + timedelta(minutes=151)),
    ]:
        assert fetch_rollup_totals(folded, [KEY], start, end) == fetch_rollups(folded, [KEY], start, end), (start, end)


@pytest.mark.parametrize("interval", ["day", "hour"])
def test_the_time_series_of_each_phase_equals_the_events(folded, interval):
    for phase in _phases():
        start = cohort_start(phase.start) if phase.number > 1 else None
        end = cohort_start(phase.end) if phase.end is not None else None
        points, source = phase_buckets_from_rollup(folded, KEY, interval, start, end)
        expected = fetch_event_buckets(folded, KEY, interval, start, end)
        assert points == expected, (interval, phase.number)
        assert sum(exposed for series in expected.values() for _, exposed, _ in series) > 0
        assert source == "rollup"
