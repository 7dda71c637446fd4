"""A session's contribution to its variants' totals, as pure logic (no servers)."""

from __future__ import annotations

import dataclasses

from shared.rollup.session import ADDED, REPLACED, UNCHANGED, SessionState, add_difference
from shared.rollup.totals import TOTAL_FIELDS, VariantRollup


def contribution(state: SessionState) -> dict[str, dict[str, float]]:
    return {variant: dict(zip(TOTAL_FIELDS, vector)) for variant, vector in state.contribution().items()}


def test_total_fields_follow_the_rollup_dataclass():
    assert TOTAL_FIELDS == tuple(f.name for f in dataclasses.fields(VariantRollup))
    assert TOTAL_FIELDS[:5] == ("impressions", "cta_clicks", "form_starts", "form_submits", "conversions")


def test_exposed_converted_session_in_one_variant_is_clean():
    state = SessionState()
    state.apply("control", "e1", "impression", None)
    state.apply("control", "e2", "conversion", 12.5)
    state.apply("control", "e3", "conversion", 7.5)
    got = contribution(state)["control"]
    assert got["impressions"] == 1 and got["conversions"] == 2
    assert got["unique_sessions"] == 1 and got["exposed_sessions"] == 1 and got["exposed_converted"] == 1
    assert got["value_total"] == 20.0
    assert (got["clean_exposed"], got["clean_converted"], got["clean_value_sum"], got["clean_value_sum_squares"]) == (
        1,
        1,
        20.0,
        400.0,
    )
    assert got["multi_variant_share"] == 0


def test_a_repeated_event_id_replaces_instead_of_counting_twice():
    state = SessionState()
    state.apply("control", "e1", "conversion", 5.0)
    state.apply("control", "e1", "conversion", 5.0)
    assert contribution(state)["control"]["conversions"] == 1
    # The same id in another variant is another event, as abacus.events keys rows by variant too.
    state.apply("variant_b", "e1", "conversion", 5.0)
    assert contribution(state)["variant_b"]["conversions"] == 1


def test_value_counts_only_on_conversions():
    state = SessionState()
    state.apply("control", "e1", "cta_click", 99.0)
    got = contribution(state)["control"]
    assert got["value_total"] == 0 and got["cta_clicks"] == 1


def test_unexposed_session_counts_as_unique_but_not_exposed():
    state = SessionState()
    state.apply("control", "e1", "form_start", None)
    got = contribution(state)["control"]
    assert got["unique_sessions"] == 1 and got["exposed_sessions"] == 0 and got["clean_exposed"] == 0


def test_session_exposed_to_two_variants_leaves_the_clean_statistics():
    state = SessionState()
    state.apply("control", "e1", "impression", None)
    state.apply("control", "e2", "conversion", 3.0)
    before = state.contribution()
    state.apply("variant_b", "e3", "impression", None)
    after = contribution(state)
    for variant in ("control", "variant_b"):
        assert after[variant]["clean_exposed"] == 0
        assert after[variant]["multi_variant_share"] == 0.5
    totals: dict[tuple[str, str, int], list[float]] = {}
    add_difference(totals, "exp", before, state.contribution())
    control = dict(zip(TOTAL_FIELDS, totals[("exp", "control", 0)]))
    assert control["clean_exposed"] == -1 and control["clean_converted"] == -1 and control["clean_value_sum"] == -3.0
    assert control["unique_sessions"] == 0 and control["multi_variant_share"] == 0.5
    variant_b = dict(zip(TOTAL_FIELDS, totals[("exp", "variant_b", 0)]))
    assert variant_b["unique_sessions"] == 1 and variant_b["exposed_sessions"] == 1 and variant_b["clean_exposed"] == 0


def test_apply_says_whether_anything_changed():
    state = SessionState()
    assert state.apply("control", "e1", "conversion", 5.0) == ADDED
    assert state.apply("control", "e1", "conversion", 5.0) == UNCHANGED
    assert state.apply("control", "e1", "conversion", 7.0) == REPLACED  # same id, new contents
    got = contribution(state)["control"]
    assert got["conversions"] == 1 and got["value_total"] == 7.0
    assert state.events() == {("control", "e1"): ("conversion", 7.0)}


def test_from_arrays_rebuilds_the_same_state():
    state = SessionState()
    state.apply("control", "e1", "impression", None)
    state.apply("variant_b", "e2", "conversion", 4.0)
    events = state.events()
    variants, ids = zip(*events)
    types, values = zip(*events.values())
    again = SessionState.from_arrays(list(variants), list(ids), list(types), list(values), [0, 0])
    assert again.events() == events and again.contribution() == state.contribution()
    assert again.summary() == state.summary() == (0, 1, [("control", 1, 0, 0, 0, 0, 0.0), ("variant_b", 0, 0, 0, 0, 1, 4.0)])


DAY_MS = 86_400_000
MINUTE_MS = 60_000


def test_the_cohort_is_the_first_impressions_utc_minute_in_any_variant():
    state = SessionState()
    state.apply("control", "e1", "conversion", 2.0, 20 * DAY_MS + 5)
    assert state.cohort_minute == 0, "never exposed"
    state.apply("variant_b", "e2", "impression", None, 21 * DAY_MS + 3 * MINUTE_MS + 59_999)
    assert state.cohort_minute == 21 * 86_400 + 3 * 60, "seconds since 1970 of the minute's start"
    state.apply("control", "e3", "impression", None, 20 * DAY_MS + 3)  # a late event from earlier
    assert state.cohort_minute == 20 * 86_400
    state.apply("control", "e3", "cta_click", None, 20 * DAY_MS + 3)  # its copy with other contents replaces it
    assert state.cohort_minute == 21 * 86_400 + 3 * 60


def test_a_session_moving_to_an_earlier_minute_moves_its_whole_contribution():
    state = SessionState()
    state.apply("control", "e1", "impression", None, 21 * DAY_MS)
    state.apply("control", "e2", "conversion", 4.0, 22 * DAY_MS)
    before_cohort, before = state.cohort_minute, state.contribution()
    state.apply("control", "e0", "impression", None, 21 * DAY_MS - MINUTE_MS)
    totals: dict[tuple[str, str, int], list[float]] = {}
    add_difference(totals, "exp", before, state.contribution(), before_cohort, state.cohort_minute)
    old_day = dict(zip(TOTAL_FIELDS, totals[("exp", "control", 21 * 86_400)]))
    new_day = dict(zip(TOTAL_FIELDS, totals[("exp", "control", 21 * 86_400 - 60)]))
    assert old_day["unique_sessions"] == -1 and old_day["impressions"] == -1 and old_day["conversions"] == -1
    assert new_day["unique_sessions"] == 1 and new_day["impressions"] == 2 and new_day["conversions"] == 1
    assert new_day["clean_value_sum"] == 4.0 and old_day["clean_value_sum"] == -4.0


def test_the_roller_decodes_what_ingest_writes_without_the_collector_tracking_it():
    import gc

    import msgspec

    from shared.wire import StreamEnvelope, StreamEvent
    from worker.rollup_fold import FoldEvent, _decoder

    written = [
        StreamEvent("e1", "exp", "control", "s1", "conversion", "/p", 12.5, '{"a": 1}', 1_700_000_000_000, 1_700_000_000_001),
        StreamEvent("e2", "exp", "variant_b", "s2", "impression", "/", None, "{}", None, 1_700_000_000_002),
    ]
    decoded = _decoder.decode(msgspec.msgpack.encode(StreamEnvelope(events=written)))
    assert [msgspec.structs.astuple(event) for event in decoded.events] == [msgspec.structs.astuple(e) for e in written]
    assert decoded.v == 1 and not gc.is_tracked(decoded) and not any(gc.is_tracked(e) for e in decoded.events)
    assert FoldEvent.__struct_fields__ == StreamEvent.__struct_fields__


def test_the_summary_rows_are_the_summary_in_the_columns_clickhouse_reads():
    import msgspec

    from shared.rollup.results_sql import _SUMMARY_COLUMNS
    from worker.rollup_store import SummaryRow, summaries, summary_rows

    assert SummaryRow.__struct_fields__ == tuple(name for name, _ in _SUMMARY_COLUMNS)
    state = SessionState()
    state.apply("control", "e1", "impression", None, 86_400_000 * 3 + 5)
    state.apply("variant_b", "e2", "conversion", 4.0, 86_400_000 * 3 + 9)
    rows = summary_rows(state, "exp")
    day, exposed, parts = state.summary()
    expected = [(1, "exp", *part[:1], day, *part[1:], exposed) for part in parts]
    assert [msgspec.structs.astuple(row) for row in rows] == expected and day == 3 * 86_400 and exposed == 1
    assert summary_rows(state, "exp") is rows  # kept until the state changes
    # A step that changes the session flips the rows it added last and adds the new ones: the
    # encoded difference is the old summary subtracted, the new one added.
    assert state.apply("variant_b", "e3", "impression", None, 86_400_000 * 2) and state.rows is None
    for row in rows:
        row.sign = -1
    after = summary_rows(state, "exp")
    encoded = summaries([*rows, *after])
    # One msgpack array per row, back to back (ClickHouse's MsgPack rows): behind an array
    # header (fixarray, 4 rows) they decode as one list.
    decoded = msgspec.msgpack.decode(bytes([0x90 | 4]) + encoded, type=list[tuple])
    day, exposed, parts = state.summary()
    assert decoded == [(-1, *row[1:]) for row in expected] + [(1, "exp", p[0], day, *p[1:], exposed) for p in parts]
    assert (day, exposed) == (2 * 86_400, 2)  # cohort minutes, as seconds since 1970
