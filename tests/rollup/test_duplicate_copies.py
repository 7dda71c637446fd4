"""Copies of one event (same experiment, variant, session and event_id) with other contents:
the rollup counts them as ``abacus.events FINAL`` does, in one step, across steps and after a
rebuild (issue 12's leftover: a retry counted once by one and twice by the other)."""

from __future__ import annotations

import dataclasses

import msgspec

from shared.wire import StreamEvent
from tests.rollup.test_roller import assert_rollup_matches_events, drain_workers, publish, roll, store_and_acknowledge
from worker.main import build_worker

# 2026-01-31 23:59:59.000 UTC and a second later, in February: two months, so two partitions of
# abacus.events (PARTITION BY toYYYYMM(received_at)).
END_OF_JANUARY_MS = 1_801_439_999_000
START_OF_FEBRUARY_MS = END_OF_JANUARY_MS + 1_000


def copy(event_id: str, event_type: str, at_ms: int, value: float | None = None, session: str = "s1") -> StreamEvent:
    return StreamEvent(event_id, "exp_a", "control", session, event_type, "/", value, "{}", None, at_ms)


def stored_rows(clickhouse, event_id: str) -> int:  # type: ignore[no-untyped-def]
    return (
        clickhouse.client()
        .query("SELECT count() FROM abacus.events FINAL WHERE event_id = %(id)s", parameters={"id": event_id})
        .result_rows[0][0]
    )


def test_copies_in_one_month_count_once_in_one_step_and_across_steps(settings, redis_client, clean_clickhouse):
    first = [copy("e1", "impression", END_OF_JANUARY_MS - 5_000), copy("e2", "conversion", END_OF_JANUARY_MS - 4_000, 10.0)]
    publish(redis_client, settings, first)
    drain_workers(settings, clean_clickhouse)
    roll(settings, clean_clickhouse)
    # A retry with other contents, then another in the same step.
    retries = [
        copy("e2", "conversion", END_OF_JANUARY_MS - 3_000, 25.0),
        copy("e2", "conversion", END_OF_JANUARY_MS - 2_000, 7.0),
    ]
    publish(redis_client, settings, retries, per_entry=1)
    drain_workers(settings, clean_clickhouse)
    roll(settings, clean_clickhouse)
    assert stored_rows(clean_clickhouse, "e2") == 1
    assert_rollup_matches_events(clean_clickhouse, experiments=("exp_a",))


def test_copies_received_in_two_months_count_as_abacus_events_counts_them(settings, redis_client, clean_clickhouse):
    settings = dataclasses.replace(settings, batch_size=1)  # each copy its own insert
    publish(redis_client, settings, [copy("e1", "impression", END_OF_JANUARY_MS)], per_entry=1)
    drain_workers(settings, clean_clickhouse)
    roll(settings, clean_clickhouse)
    publish(redis_client, settings, [copy("e1", "impression", START_OF_FEBRUARY_MS)], per_entry=1)
    drain_workers(settings, clean_clickhouse)
    roll(settings, clean_clickhouse)
    # FINAL replaces across partitions too (ClickHouse's do_not_merge_across_partitions_select_final
    # is off): one row, as the roller's session state, keyed by (variant, event_id), holds it.
    assert stored_rows(clean_clickhouse, "e1") == 1
    assert_rollup_matches_events(clean_clickhouse, experiments=("exp_a",))


def test_copies_differing_only_where_counts_do_not_look_count_once(settings, redis_client, clean_clickhouse):
    first = copy("e1", "impression", END_OF_JANUARY_MS)
    retry = msgspec.structs.replace(first, path="/retried", metadata_json='{"retry": 1}')
    changed = copy("e1", "cta_click", END_OF_JANUARY_MS + 10)
    publish(redis_client, settings, [first, retry, changed, first], per_entry=1)
    drain_workers(settings, clean_clickhouse)
    roll(settings, clean_clickhouse)
    assert stored_rows(clean_clickhouse, "e1") == 1
    assert_rollup_matches_events(clean_clickhouse, experiments=("exp_a",))


def test_the_copy_abacus_events_keeps_is_the_one_a_later_roller_reads_back(settings, redis_client, clean_clickhouse):
    roll(settings, clean_clickhouse)
    impression = copy("e1", "impression", END_OF_JANUARY_MS - 5_000)
    copies = [copy("e2", "conversion", END_OF_JANUARY_MS - 4_000 + i, value) for i, value in enumerate((10.0, 25.0, 7.0))]
    publish(redis_client, settings, [impression, *copies], per_entry=1)
    # A worker stores the copies out of stream order, so abacus.events keeps the middle one (the
    # one inserted last): neither the first nor the last the roller reads.
    worker = build_worker(settings, clean_clickhouse, consumer_name="w1")
    worker.consumer.ensure_group()
    delivered = worker.consumer.read_new(100, None)
    for batch in ([delivered[0], delivered[1]], [delivered[3]], [delivered[2]]):
        store_and_acknowledge(worker, batch)
    kept = clean_clickhouse.client().query("SELECT conversion_value FROM abacus.events FINAL WHERE event_id = 'e2'")
    assert kept.result_rows == [(25.0,)]
    roll(settings, clean_clickhouse)
    assert_rollup_matches_events(clean_clickhouse, experiments=("exp_a",))
    # The session changes again: a new roller (a process with an empty cache) reads it back from
    # ClickHouse and subtracts what the rollup holds for it, the kept copy's value.
    publish(redis_client, settings, [copy("e3", "conversion", END_OF_JANUARY_MS - 1_000, 3.0)])
    drain_workers(settings, clean_clickhouse)
    roll(settings, clean_clickhouse)
    assert_rollup_matches_events(clean_clickhouse, experiments=("exp_a",))
