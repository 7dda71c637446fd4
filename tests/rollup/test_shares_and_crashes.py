"""Several rollers sharing the experiments, rollers killed at random points, and per-day totals
against the events, all on a real Valkey and the session's chDB."""

from __future__ import annotations

import dataclasses
import random
import threading
from datetime import datetime, timezone

import pytest

from shared.rollup import protocol_share
from shared.rollup.protocol import RollupProtocol, shard_of
from shared.wire import StreamEvent
from tests.conftest import wait_for
from tests.rollup.test_roller import assert_rollup_matches_events, drain_workers, publish
from worker import rollup, rollup_step, rollup_store
from worker.main import build_roller

EXPERIMENTS = tuple(f"exp_{name}" for name in "abcdefgh")
VARIANTS = ("control", "variant_b", "variant_c")
DAY_MS = 86_400_000
FIRST_DAY_MS = 20_600 * DAY_MS  # 2026-05-27T00:00Z
TYPES = ("impression", "impression", "cta_click", "form_start", "form_submit", "conversion", "video_play")


def day_events(rng: random.Random, n: int, sessions: int = 60, offset: int = 0) -> list[StreamEvent]:
    """Traffic over five days: sessions spanning days, late events (received earlier than events
    before them in the stream), repeated event ids, sessions in several variants."""
    events: list[StreamEvent] = []
    for i in range(n):
        session = rng.randrange(sessions)
        experiment = EXPERIMENTS[session % len(EXPERIMENTS)]
        variant = VARIANTS[session % 3] if rng.random() < 0.85 else rng.choice(VARIANTS)
        # Each session starts on a day of its own and may go on for up to two more.
        at = FIRST_DAY_MS + (session % 5) * DAY_MS + rng.randrange(3 * DAY_MS)
        event_type = rng.choice(TYPES)
        repeat = events and rng.random() < 0.15
        event_id = rng.choice(events).event_id if repeat else f"d{offset + i}"
        value = round(rng.uniform(1, 90), 2) if event_type == "conversion" else None
        events.append(StreamEvent(event_id, experiment, variant, f"s{session}", event_type, "/", value, "{}", None, at))
    return events


def day(n: int) -> datetime:
    return datetime.fromtimestamp((FIRST_DAY_MS + n * DAY_MS) / 1000, tz=timezone.utc)


def assert_all_windows_match(clickhouse) -> None:
    assert_rollup_matches_events(clickhouse, experiments=EXPERIMENTS)
    for start, end in ((0, 1), (1, 3), (2, 8), (None, 2), (3, None), (-1, 0)):
        assert_rollup_matches_events(
            clickhouse,
            start=day(start) if start is not None else None,
            end=day(end) if end is not None else None,
            experiments=EXPERIMENTS,
        )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rollup_and_events_agree_for_all_time_and_day_windows(settings, redis_client, clean_clickhouse, seed):
    rng = random.Random(seed)
    for round_ in range(3):
        publish(redis_client, settings, day_events(rng, 250, offset=1000 * round_), per_entry=rng.choice([1, 4]))
        drain_workers(settings, clean_clickhouse)
        roller = build_roller(dataclasses.replace(settings, rollup_cache_sessions=rng.choice([3, 1000])), clean_clickhouse)
        roller.run(until_caught_up=True)
        assert_all_windows_match(clean_clickhouse)


def test_the_shares_cover_every_experiment():
    assert {shard_of(key, 3) for key in EXPERIMENTS} == {0, 1, 2}, "the tests below need work in every share"


def run_in_thread(roller) -> threading.Thread:  # type: ignore[no-untyped-def]
    thread = threading.Thread(target=roller.run, daemon=True)
    thread.start()
    return thread


def caught_up(settings, redis_client) -> bool:  # type: ignore[no-untyped-def]
    freshness = RollupProtocol(redis_client, settings.stream, settings.consumer_group, settings.rollup_shards).freshness(
        list(EXPERIMENTS)
    )
    return freshness.current and freshness.unfolded_events == 0


@pytest.mark.parametrize("rollers", [2, 3])
def test_several_rollers_count_everything_once_and_take_over_a_dead_ones_shares(
    settings, redis_client, clean_clickhouse, monkeypatch, rollers
):
    monkeypatch.setattr(rollup, "_LOCK_TTL_MS", 600)
    settings = dataclasses.replace(settings, rollup_shards=3, rollup_idle_ms=20)
    rng = random.Random(rollers)
    running = [build_roller(settings, clean_clickhouse) for _ in range(rollers)]
    threads = [run_in_thread(roller) for roller in running]
    try:
        publish(redis_client, settings, day_events(rng, 300))
        drain_workers(settings, clean_clickhouse)
        wait_for(lambda: caught_up(settings, redis_client), timeout=30)
        # Together they hold all of the shares, none twice, and soon each a fair number: a roller
        # that started before the others heartbeated takes every share, then gives the extra back.
        fair = -(-3 // rollers)
        wait_for(
            lambda: sorted(s for r in running for s in r.held) == [0, 1, 2] and all(len(r.held) <= fair for r in running),
            timeout=10,
        )
        assert_all_windows_match(clean_clickhouse)

        # One dies as if killed: it stops without letting go of its locks.
        dead = running.pop(0)
        monkeypatch.setattr(dead, "_release_all", lambda: None)
        dead.request_stop()
        threads.pop(0).join(10)
        publish(redis_client, settings, day_events(rng, 300, offset=10_000))
        drain_workers(settings, clean_clickhouse)
        wait_for(lambda: sorted(s for r in running for s in r.held) == [0, 1, 2], timeout=20)
        wait_for(lambda: caught_up(settings, redis_client), timeout=30)
        assert_all_windows_match(clean_clickhouse)
    finally:
        for roller in running:
            roller.request_stop()
        for thread in threads:
            thread.join(10)


class Killed(BaseException):
    """A roller process gone at once: nothing after this point runs, nothing is released."""


# Where a roller can die, and whether the point comes before the roller has read any event (a
# rebuild's): those die at their first call, the others once a random number of events was read.
KILL_POINTS = [
    (protocol_share.Share, "begin_step", False),
    (protocol_share.Share, "finish_step", False),
    (protocol_share.Share, "begin_rebuild", True),
    (rollup_store, "insert_summaries", False),
    (rollup_store, "insert_events", False),
    (rollup_store, "rebuild_from_events", True),
    (rollup_store, "load_sessions", False),
]


def test_rollers_killed_at_random_points_never_claim_an_undercount(settings, redis_client, clean_clickhouse, monkeypatch):
    monkeypatch.setattr(rollup, "_LOCK_TTL_MS", 300)
    settings = dataclasses.replace(settings, batch_size=40, rollup_cache_sessions=5)
    rng = random.Random(97)
    probe = RollupProtocol(redis_client, settings.stream, settings.consumer_group)
    # The kill is timed by the events the roller has read, not by its steps, so it lands at a
    # random place in the round whatever the step size (one step or many per round).
    events_read = [0]
    real_add = rollup_step.FoldStep.add

    def counting_add(self, events):  # type: ignore[no-untyped-def]
        events_read[0] += len(events)
        return real_add(self, events)

    monkeypatch.setattr(rollup_step.FoldStep, "add", counting_add)
    kills = 0
    for round_ in range(8):
        published = day_events(rng, 120, offset=1000 * round_)
        publish(redis_client, settings, published, per_entry=rng.choice([1, 3]))
        drain_workers(settings, clean_clickhouse)
        if round_ % 3 == 2:
            redis_client.incr("abacus:rollup:rebuild")
        # This roller dies at the first call of one of the kill points made once it has read
        # at least `after` events.
        # Only points the round reaches: the first round builds the rollup from abacus.events (the
        # workers trimmed the stream: no rollup held it), later ones fold, some rebuild first.
        points = (
            [p for p in KILL_POINTS if p[2]]
            if round_ == 0
            else KILL_POINTS
            if round_ % 3 == 2
            else [p for p in KILL_POINTS if not p[2]]
        )
        owner, (point, attribute, before_reading) = f"victim-{round_}", rng.choice(points)
        real = getattr(point, attribute)
        events_read[0] = 0
        after = 0 if before_reading else rng.randrange(len(published))

        def dying(*args, _real=real, _after=after, **kwargs):  # type: ignore[no-untyped-def]
            if events_read[0] >= _after:
                raise Killed()
            return _real(*args, **kwargs)

        monkeypatch.setattr(point, attribute, dying)
        victim = build_roller(settings, clean_clickhouse, owner=owner)
        monkeypatch.setattr(victim, "_release_all", lambda: None)
        try:
            victim.run(until_caught_up=True)
        except Killed:
            kills += 1
        monkeypatch.setattr(point, attribute, real)
        # Whatever the rollup says now must be true: current with nothing unfolded means exact.
        freshness = probe.freshness(list(EXPERIMENTS))
        if freshness.current and freshness.unfolded_events == 0:
            assert_all_windows_match(clean_clickhouse)
        # A new roller (another process) takes over once the dead one's lock lapsed.
        build_roller(settings, clean_clickhouse).run(until_caught_up=True)
        assert_all_windows_match(clean_clickhouse)
    assert kills >= 6, "most rounds must have killed their roller somewhere"


def test_python_and_clickhouse_agree_on_each_experiments_share(clean_clickhouse):
    from shared.rollup.results_sql import shard_condition

    keys = [*EXPERIMENTS, "homepage_hero_test", "pricing_cta_test", "ünïcode_key"]
    for shards in (1, 2, 3, 7):
        for shard in range(shards):
            sql = (
                f"SELECT key FROM (SELECT arrayJoin({{keys:Array(String)}}) AS key) WHERE {shard_condition(shard, shards, 'key')}"
            )
            found = {row[0] for row in clean_clickhouse.client().query(sql, parameters={"keys": keys}).result_rows}
            assert found == {key for key in keys if shard_of(key, shards) == shard}
