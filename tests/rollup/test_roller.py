"""The roller against a real Valkey and the session's chDB: whatever the traffic, crashes,
dead letters and rebuilds, the rollup's totals equal the raw query over abacus.events."""

from __future__ import annotations

import dataclasses
import math
import random
import threading
import time

import msgspec
import pytest
import redis
from clickhouse_connect.driver.exceptions import ClickHouseError

from query_api.results_query import fetch_rollup_totals, fetch_rollups
from shared import redis_keys
from shared.clickhouse import ClickHouse
from shared.settings import Settings
from shared.wire import StreamEnvelope, StreamEvent
from tests.conftest import wait_for
from worker import rollup_store
from worker.loop import Worker
from worker.main import build_roller, build_worker
from worker.rollup import LostLock, Roller
from worker.rows import decode_entries

LOCK = redis_keys.rollup_shard_key("lock", 0, 1)
BUILT = redis_keys.rollup_shard_key(redis_keys.ROLLUP_BUILT, 0, 1)
STEP = redis_keys.rollup_shard_key("step", 0, 1)
ALIVE = redis_keys.rollup_shard_key("alive", 0, 1)

EXPERIMENTS = ("exp_a", "exp_b")
VARIANTS = ("control", "variant_b", "variant_c")
TYPES = ("impression", "impression", "cta_click", "form_start", "form_submit", "conversion", "custom_event")
RECEIVED_MS = 1_780_000_000_000


def random_events(rng: random.Random, n: int, sessions: int = 40) -> list[StreamEvent]:
    """Traffic with what makes counting hard: sessions in several variants, repeated event ids,
    conversions with values, events without an impression, and types the results ignore."""
    events = []
    for i in range(n):
        session = rng.randrange(sessions)
        experiment = EXPERIMENTS[session % 2]
        # Most sessions stay in one variant; some wander into a second one.
        variant = VARIANTS[session % 3] if rng.random() < 0.85 else rng.choice(VARIANTS)
        event_type = rng.choice(TYPES)
        event_id = f"e{i}" if rng.random() < 0.8 or not events else rng.choice(events).event_id
        value = round(rng.uniform(0, 200), 2) if event_type == "conversion" and rng.random() < 0.8 else None
        events.append(
            StreamEvent(
                event_id=event_id,
                experiment_key=experiment,
                variant_key=variant,
                session_id=f"s{session}",
                event_type=event_type,
                path="/",
                conversion_value=value,
                metadata_json="{}",
                client_ts_ms=None,
                received_at_ms=RECEIVED_MS + i,
            )
        )
    return events


def publish(r: redis.Redis, settings: Settings, events: list[StreamEvent], per_entry: int = 3) -> list[bytes]:
    pipe = r.pipeline(transaction=False)
    for i in range(0, len(events), per_entry):
        pipe.xadd(settings.stream, {b"e": msgspec.msgpack.encode(StreamEnvelope(events=events[i : i + per_entry]))})
    return pipe.execute()


def drain_workers(settings: Settings, clickhouse: ClickHouse) -> None:
    worker = build_worker(settings, clickhouse, consumer_name="w1")
    worker.run(burst=True)
    worker.consumer.redis.close()


def store_and_acknowledge(worker: Worker, entries: list) -> None:
    """What a worker does with a batch it read: insert its rows, then acknowledge its entries."""
    worker.sink.insert(decode_entries(entries))
    worker.consumer.ack([entry_id for entry_id, _ in entries])


def roll(settings: Settings, clickhouse: ClickHouse, cache_sessions: int = 1000) -> Roller:
    roller = build_roller(dataclasses.replace(settings, rollup_cache_sessions=cache_sessions), clickhouse)
    roller.run(until_caught_up=True)
    return roller


def store_and_roll(settings: Settings, r: redis.Redis, clickhouse: ClickHouse, events: list[StreamEvent]) -> None:
    """Beacons through the whole pipeline: queued, stored by a worker, folded by a roller."""
    publish(r, settings, events)
    drain_workers(settings, clickhouse)
    roll(settings, clickhouse)


def assert_rollup_matches_events(clickhouse: ClickHouse, start=None, end=None, experiments=EXPERIMENTS) -> None:
    client = clickhouse.client()
    raw = fetch_rollups(client, list(experiments), start, end)
    rolled = fetch_rollup_totals(client, list(experiments), start, end)
    if start is None and end is None:
        assert raw, "the raw query found no events: the test would prove nothing"
    raw = {key: value for key, value in raw.items() if any(dataclasses.astuple(value))}
    rolled = {key: value for key, value in rolled.items() if any(dataclasses.astuple(value))}
    assert rolled.keys() == raw.keys()
    for key, expected in raw.items():
        got = rolled[key]
        for field in dataclasses.fields(expected):
            want, have = getattr(expected, field.name), getattr(got, field.name)
            if isinstance(want, float) or isinstance(have, float):
                assert math.isclose(have, want, rel_tol=1e-9, abs_tol=1e-6), (key, field.name, have, want)
            else:
                assert have == want, (key, field.name, have, want)


def test_rollup_equals_the_raw_query_over_several_steps(settings, redis_client, clean_clickhouse):
    settings = dataclasses.replace(settings, batch_size=50)
    rng = random.Random(7)
    for _ in range(4):
        publish(redis_client, settings, random_events(rng, 300))
        drain_workers(settings, clean_clickhouse)
        roll(settings, clean_clickhouse)
        assert_rollup_matches_events(clean_clickhouse)


def test_a_tiny_session_cache_reads_evicted_sessions_back_from_clickhouse(settings, redis_client, clean_clickhouse):
    rng = random.Random(11)
    for _ in range(3):
        publish(redis_client, settings, random_events(rng, 250), per_entry=1)
        drain_workers(settings, clean_clickhouse)
        roller = roll(settings, clean_clickhouse, cache_sessions=2)
        assert len(roller.shares[0].folder.cache) <= 2
    assert_rollup_matches_events(clean_clickhouse)


def test_a_repeated_beacon_in_a_later_step_counts_once(settings, redis_client, clean_clickhouse):
    rng = random.Random(3)
    events = random_events(rng, 100)
    publish(redis_client, settings, events)
    drain_workers(settings, clean_clickhouse)
    roll(settings, clean_clickhouse)
    before = fetch_rollup_totals(clean_clickhouse.client(), list(EXPERIMENTS))
    publish(redis_client, settings, events[:40])  # a client retrying beacons with their event ids
    drain_workers(settings, clean_clickhouse)
    roll(settings, clean_clickhouse)
    assert fetch_rollup_totals(clean_clickhouse.client(), list(EXPERIMENTS)) == before
    assert_rollup_matches_events(clean_clickhouse)


def test_roller_folds_only_what_workers_stored(settings, redis_client, clean_clickhouse):
    rng = random.Random(5)
    publish(redis_client, settings, random_events(rng, 60))
    drain_workers(settings, clean_clickhouse)
    publish(redis_client, settings, random_events(rng, 60))  # queued, not stored yet
    roll(settings, clean_clickhouse)
    assert_rollup_matches_events(clean_clickhouse)
    drain_workers(settings, clean_clickhouse)
    roll(settings, clean_clickhouse)
    assert_rollup_matches_events(clean_clickhouse)


def test_dead_lettered_entries_are_left_out_like_abacus_events_leaves_them_out(settings, redis_client, clean_clickhouse):
    rng = random.Random(9)
    store_and_roll(settings, redis_client, clean_clickhouse, random_events(rng, 30))
    doomed = publish(redis_client, settings, random_events(rng, 9))
    # A worker takes the entries, then parks one of them as ClickHouse kept rejecting it.
    worker = build_worker(settings, clean_clickhouse, consumer_name="w1")
    worker.consumer.ensure_group()
    delivered = worker.consumer.read_new(100, None)
    assert [entry_id for entry_id, _ in delivered] == doomed
    worker.consumer.dead_letter(doomed[1], delivered[1][1], "insert rejected: test")
    store_and_acknowledge(worker, [delivered[0], delivered[2]])
    roll(settings, clean_clickhouse)
    assert_rollup_matches_events(clean_clickhouse)


@pytest.mark.parametrize("landed", ["nothing", "totals only", "events only", "totals and events"])
def test_a_step_redone_after_a_crash_counts_nothing_twice(settings, redis_client, clean_clickhouse, landed):
    rng = random.Random(13)
    store_and_roll(settings, redis_client, clean_clickhouse, random_events(rng, 90))
    publish(redis_client, settings, random_events(rng, 90))
    drain_workers(settings, clean_clickhouse)

    # A roller records its step, then dies with some of the step's inserts in ClickHouse.
    crashed = build_roller(settings, clean_clickhouse)
    crashed.elect()
    share = crashed.shares[0]
    start = share.share.bookmark()
    assert start is not None
    until = share.stream.stored_until()
    entries = share.stream.read_range(start, until, None)
    end = entries[-1][0]
    share.share.begin_step(start, end)
    generation = share.share.generation()
    assert generation is not None
    if landed != "nothing":
        # "events only": the events a step sends while it folds landed, its totals never did.
        skipped = {"totals only": "insert_events", "events only": "insert_summaries"}.get(landed)
        real = getattr(rollup_store, skipped) if skipped else None
        if skipped:
            setattr(rollup_store, skipped, lambda *args, **kwargs: None)
        try:
            share._redo(start, end, generation, 0)
        finally:
            if skipped:
                setattr(rollup_store, skipped, real)
    redis_client.delete(LOCK)  # its lock expired

    roll(settings, clean_clickhouse)
    assert redis_client.get(STEP) is None
    assert_rollup_matches_events(clean_clickhouse)


def test_rebuild_recomputes_from_abacus_events(settings, redis_client, clean_clickhouse):
    rng = random.Random(17)
    store_and_roll(settings, redis_client, clean_clickhouse, random_events(rng, 200))
    # An analyst deletes a session's rows by hand; the rollup no longer matches until rebuilt.
    clean_clickhouse.client().command("DELETE FROM abacus.events WHERE session_id = 's4'")
    redis_client.incr(redis_keys.ROLLUP_REBUILD)
    roll(settings, clean_clickhouse)
    assert build_roller(settings, clean_clickhouse).shares[0].share.generation() is not None, "built, request served"
    assert_rollup_matches_events(clean_clickhouse)
    # And it keeps folding new traffic on top of the rebuilt state.
    store_and_roll(settings, redis_client, clean_clickhouse, random_events(rng, 200))
    assert_rollup_matches_events(clean_clickhouse)


def test_first_start_on_existing_events_builds_the_rollup(settings, redis_client, clean_clickhouse):
    rng = random.Random(19)
    publish(redis_client, settings, random_events(rng, 150))
    drain_workers(settings, clean_clickhouse)
    redis_client.xtrim(settings.stream, maxlen=0)  # history long gone from the stream
    roll(settings, clean_clickhouse)
    assert_rollup_matches_events(clean_clickhouse)


def test_one_roller_at_a_time_and_a_standby_takes_over(settings, redis_client, clean_clickhouse):
    first = build_roller(settings, clean_clickhouse)
    second = build_roller(settings, clean_clickhouse)
    first.run_once()
    assert first.held == {0}
    publish(redis_client, settings, random_events(random.Random(23), 30))
    drain_workers(settings, clean_clickhouse)
    assert second.run_once()[0] is False and not second.held
    first.request_stop()
    first.run()  # returns at once and releases the lock
    second.run(until_caught_up=True)
    assert not second.held and not redis_client.exists(LOCK)  # released on return
    assert_rollup_matches_events(clean_clickhouse)


def test_rollup_group_holds_back_trimming_until_folded(settings, redis_client, clean_clickhouse):
    roll(settings, clean_clickhouse)  # creates the bookmark
    publish(redis_client, settings, random_events(random.Random(29), 30), per_entry=1)
    drain_workers(settings, clean_clickhouse)  # its burst trims what every group acknowledged
    assert redis_client.xlen(settings.stream) == 30
    roll(settings, clean_clickhouse)
    drain_workers(settings, clean_clickhouse)
    assert redis_client.xlen(settings.stream) == 0


def test_two_steps_adding_identical_differences_both_count(settings, redis_client, clean_clickhouse):
    # Each step adds the same difference row (one new exposed session in control): ClickHouse
    # must not mistake the second insert for a retry of the first.
    for session in ("s1", "s2", "s3"):
        impression = random_events(random.Random(1), 1)[0]
        impression = msgspec.structs.replace(
            impression,
            experiment_key="exp_a",
            variant_key="control",
            session_id=session,
            event_type="impression",
            event_id=session,
        )
        publish(redis_client, settings, [impression])
        drain_workers(settings, clean_clickhouse)
        roll(settings, clean_clickhouse)
    totals = fetch_rollup_totals(clean_clickhouse.client(), ["exp_a"])
    assert totals[("exp_a", "control")].exposed_sessions == 3
    assert_rollup_matches_events(clean_clickhouse)


def test_a_roller_that_lost_its_lock_writes_nothing(settings, redis_client, clean_clickhouse):
    roll(settings, clean_clickhouse)
    publish(redis_client, settings, random_events(random.Random(31), 40))
    drain_workers(settings, clean_clickhouse)
    stalled = build_roller(settings, clean_clickhouse)
    stalled.elect()
    share = stalled.shares[0]
    start = share.share.bookmark()
    assert start is not None
    entries = share.stream.read_range(start, share.stream.stored_until(), None)
    redis_client.set(LOCK, "another-roller")  # its lock lapsed and was taken
    with pytest.raises(LostLock):
        share._redo(start, entries[-1][0], "test", 0)
    assert fetch_rollup_totals(clean_clickhouse.client(), list(EXPERIMENTS)) == {}
    redis_client.delete(LOCK)
    roll(settings, clean_clickhouse)
    assert_rollup_matches_events(clean_clickhouse)


def test_a_rebuild_still_skips_dead_letters_left_in_the_stream(settings, redis_client, clean_clickhouse):
    roll(settings, clean_clickhouse)
    doomed = publish(redis_client, settings, random_events(random.Random(37), 6), per_entry=1)
    worker = build_worker(settings, clean_clickhouse, consumer_name="w1")
    worker.consumer.ensure_group()
    delivered = worker.consumer.read_new(100, None)
    worker.consumer.dead_letter(doomed[0], delivered[0][1], "insert rejected: test")
    store_and_acknowledge(worker, delivered[1:])
    roller = build_roller(settings, clean_clickhouse)
    roller.run(until_caught_up=True)
    redis_client.incr(redis_keys.ROLLUP_REBUILD)  # the same roller rebuilds and refolds the stream
    roller.stopping.clear()
    roller.run(until_caught_up=True)
    assert redis_client.xlen(settings.stream) == 6, "the refold must have had entries to read"
    assert_rollup_matches_events(clean_clickhouse)


def test_an_abandoned_rollup_stops_holding_back_trimming(settings, redis_client, clean_clickhouse):
    roll(settings, clean_clickhouse)
    redis_client.delete(ALIVE)  # no roller has run for five minutes
    publish(redis_client, settings, random_events(random.Random(41), 30), per_entry=1)
    drain_workers(settings, clean_clickhouse)  # its burst ends with a trim
    assert redis_client.xlen(settings.stream) == 0, "a rollup nobody folds must not make the stream grow"
    assert not redis_client.exists(BUILT), "results must stop trusting the abandoned rollup"
    # The next roller finds no bookmark and rebuilds from the events.
    roll(settings, clean_clickhouse)
    assert_rollup_matches_events(clean_clickhouse)


def test_the_lock_is_kept_between_steps_and_released_for_good_on_stop(settings, redis_client, clean_clickhouse, monkeypatch):
    from worker import rollup

    monkeypatch.setattr(rollup, "_LOCK_TTL_MS", 300)
    # Idle for a minute after its first step: only the renewing thread can keep the lock alive.
    roller = build_roller(dataclasses.replace(settings, rollup_idle_ms=60_000), clean_clickhouse)
    thread = threading.Thread(target=roller.run)
    thread.start()
    try:
        wait_for(lambda: redis_client.exists(BUILT))
        time.sleep(1.0)  # more than three lifetimes of the lock
        assert redis_client.get(LOCK) == roller.owner.encode()
    finally:
        roller.request_stop()
        thread.join(10)
    assert not thread.is_alive()
    assert not redis_client.exists(LOCK)  # released, and not taken again


def test_a_rebuild_that_failed_half_way_runs_again(settings, redis_client, clean_clickhouse, monkeypatch):
    publish(redis_client, settings, random_events(random.Random(43), 60))
    drain_workers(settings, clean_clickhouse)
    real_rebuild = rollup_store.rebuild_from_events
    calls = []

    def fails_first(client, *share):
        calls.append(client)
        if len(calls) == 1:
            raise ClickHouseError("ClickHouse went away in the middle of the rebuild")
        real_rebuild(client, *share)

    monkeypatch.setattr(rollup_store, "rebuild_from_events", fails_first)
    roll(settings, clean_clickhouse)  # logs the failure, backs off, tries again
    assert len(calls) == 2
    assert redis_client.exists(BUILT)
    assert_rollup_matches_events(clean_clickhouse)


def test_a_roller_taking_the_lock_again_forgets_what_it_knew(settings, redis_client, clean_clickhouse):
    roll(settings, clean_clickhouse)
    publish(redis_client, settings, random_events(random.Random(47), 30))
    drain_workers(settings, clean_clickhouse)
    first = build_roller(settings, clean_clickhouse)
    first.run_once()
    share = first.shares[0]
    assert share._bookmarks is not None and len(share.folder.cache) > 0
    # Its lock lapses (a long pause), another roller holds it for a while, then lets it lapse too.
    redis_client.set(LOCK, "another-roller")
    first.elect()
    assert not first.held
    redis_client.delete(LOCK)
    first.elect()
    assert first.held == {0}
    assert share._bookmarks is None and len(share.folder.cache) == 0 and share.folder._known is None


def test_a_roller_far_behind_is_given_up_so_the_stream_cannot_grow_without_bound(settings, redis_client, clean_clickhouse):
    roll(settings, clean_clickhouse)  # alive, bookmark at the start of an empty stream
    # An entry from eleven minutes ago that the roller never got to, then current traffic.
    old_id = f"{int(time.time() * 1000) - 660_000}-0"
    redis_client.xadd(
        settings.stream, {b"e": msgspec.msgpack.encode(StreamEnvelope(events=random_events(random.Random(53), 3)))}, id=old_id
    )
    publish(redis_client, settings, random_events(random.Random(59), 30), per_entry=1)
    drain_workers(settings, clean_clickhouse)
    assert redis_client.xlen(settings.stream) == 0
    assert not redis_client.exists(BUILT)
    roll(settings, clean_clickhouse)  # rebuilds from the events
    assert_rollup_matches_events(clean_clickhouse)
