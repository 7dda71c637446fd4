"""The worker against a real Valkey and the session's chDB: batching, acknowledgement, trimming,
crash recovery without loss or duplicates, dead-lettering, outages and stop requests.

Stream entries are written the way ingest writes them (one XADD of a msgpack StreamEnvelope in
field b"e"); crashes are simulated by leaving entries pending exactly as a killed process would.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import msgspec
import pytest
import redis

from shared.clickhouse import ClickHouse
from shared.settings import Settings
from shared.wire import StreamEnvelope, StreamEvent
from tests.conftest import count_events, raw_count, wait_for
from worker.loop import Worker
from worker.main import build_worker
from worker.rows import decode_entries
from worker.sink import ClickHouseSink

# A fixed month, so every row lands in one partition and one insert makes exactly one part.
RECEIVED_MS = 1_780_000_000_123


# ----- helpers ---------------------------------------------------------------------------------
def event(i: int | str, **overrides: object) -> StreamEvent:
    fields: dict[str, object] = {
        "event_id": f"ev-{i}",
        "experiment_key": "homepage_hero_test",
        "variant_key": "control",
        "session_id": f"session_{i}",
        "event_type": "impression",
        "path": "/",
        "conversion_value": None,
        "metadata_json": "{}",
        "client_ts_ms": None,
        "received_at_ms": RECEIVED_MS,
    }
    fields.update(overrides)
    return StreamEvent(**fields)  # type: ignore[arg-type]


def envelope(*events: StreamEvent) -> dict[bytes, bytes]:
    return {b"e": msgspec.msgpack.encode(StreamEnvelope(events=list(events)))}


def add(r: redis.Redis, settings: Settings, *events: StreamEvent) -> bytes:
    return r.xadd(settings.stream, envelope(*events))


def add_many(r: redis.Redis, settings: Settings, n: int, start: int = 0) -> list[bytes]:
    """``n`` entries of one event each (event ids ``ev-start`` .. ``ev-start+n-1``), pipelined."""
    ids: list[bytes] = []
    for chunk in range(start, start + n, 500):
        pipe = r.pipeline(transaction=False)
        for i in range(chunk, min(chunk + 500, start + n)):
            pipe.xadd(settings.stream, envelope(event(i)))
        ids.extend(pipe.execute())
    return ids


def ensure_group(r: redis.Redis, settings: Settings) -> None:
    try:
        r.xgroup_create(settings.stream, settings.consumer_group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        assert "BUSYGROUP" in str(exc)


def read_as(r: redis.Redis, settings: Settings, consumer: str, count: int) -> list[tuple[bytes, dict]]:
    """What a worker's XREADGROUP does: the entries become pending for ``consumer``."""
    reply = r.xreadgroup(settings.consumer_group, consumer, {settings.stream: ">"}, count=count)
    return reply[0][1] if reply else []


def pending(r: redis.Redis, settings: Settings) -> list[dict]:
    return r.xpending_range(settings.stream, settings.consumer_group, "-", "+", 100_000)


def pending_count(r: redis.Redis, settings: Settings) -> int:
    return r.xpending(settings.stream, settings.consumer_group)["pending"]


def batch_consumers(r: redis.Redis, settings: Settings) -> dict[str, int]:
    """Consumers the workers read batches as (``<consumer>#batch-<run>-<n>``), and their pending counts."""
    consumers = r.xinfo_consumers(settings.stream, settings.consumer_group)
    return {c["name"].decode(): c["pending"] for c in consumers if b"#batch-" in c["name"]}


def blocked_stream_readers(r: redis.Redis) -> int:
    """Connections of this test's database blocked in XREADGROUP. Counted from CLIENT LIST because
    Redis before 7.2 only creates a consumer once a read delivers entries to it."""
    db = r.connection_pool.connection_kwargs.get("db", 0)
    return sum(
        1 for client in r.client_list() if client["cmd"] == "xreadgroup" and "b" in client["flags"] and int(client["db"]) == db
    )


def dead_letters(r: redis.Redis, settings: Settings) -> list[tuple[bytes, dict]]:
    return r.xrange(settings.dead_letter_stream)


def event_ids(clickhouse: ClickHouse) -> list[str]:
    rows = clickhouse.client().query("SELECT event_id FROM abacus.events FINAL ORDER BY event_id").result_rows
    return [row[0] for row in rows]


def active_parts(clickhouse: ClickHouse) -> int:
    return (
        clickhouse.client()
        .query("SELECT count() FROM system.parts WHERE database = 'abacus' AND table = 'events' AND active")
        .result_rows[0][0]
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Workers:
    """Builds workers the way `abacus worker` does and closes their connections afterwards."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._built: list[tuple[Worker, ClickHouse]] = []

    def __call__(
        self, name: str, clickhouse_url: str | None = None, wrap_sink: Callable | None = None, **overrides: object
    ) -> Worker:
        """``wrap_sink``: builds the sink the worker is given around the one it would have."""
        settings = dataclasses.replace(self.settings, **overrides)
        clickhouse = ClickHouse(clickhouse_url or self.settings.clickhouse_url or "")
        worker = build_worker(settings, clickhouse, consumer_name=name)
        if wrap_sink is not None:
            worker = Worker(
                worker.consumer,
                wrap_sink(worker.sink),
                batch_size=settings.batch_size,
                batch_wait_ms=settings.batch_wait_ms,
                max_deliveries=settings.max_deliveries,
                claim_idle_ms=settings.claim_idle_ms,
            )
        self._built.append((worker, clickhouse))
        return worker

    def close(self) -> None:
        for worker, clickhouse in self._built:
            worker.request_stop()
            worker.consumer.redis.close()
            clickhouse.close()


@pytest.fixture()
def workers(settings: Settings) -> Iterator[Workers]:
    built = Workers(settings)
    yield built
    built.close()


@contextmanager
def running(worker: Worker, stop_within: float = 5.0) -> Iterator[threading.Thread]:
    """Run ``worker`` in a thread; on exit ask it to stop and require that it does, promptly."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            worker.run()
        except BaseException as exc:  # surfaced below: a crashed worker thread must fail the test
            errors.append(exc)

    thread = threading.Thread(target=target, name=f"worker-{worker.consumer.consumer}", daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        worker.request_stop()
        thread.join(stop_within)
    assert not thread.is_alive(), f"worker did not stop within {stop_within}s of request_stop()"
    assert not errors, f"worker thread crashed: {errors[0]!r}"


@pytest.fixture()
def merges_stopped(clean_clickhouse: ClickHouse) -> Iterator[ClickHouse]:
    """No background merges, so raw row and part counts show exactly what each insert stored
    (a merge would collapse duplicates and hide a failed deduplication)."""
    clean_clickhouse.client().command("SYSTEM STOP MERGES abacus.events")
    try:
        yield clean_clickhouse
    finally:
        clean_clickhouse.client().command("SYSTEM START MERGES abacus.events")


class SimulatedKill(BaseException):
    """Stands for SIGKILL: nothing in the worker catches it, so nothing after the raise runs."""


class KilledAfterInsert:
    """A real sink whose process 'dies' right after ClickHouse confirmed the insert."""

    def __init__(self, sink: ClickHouseSink, on_insert: int = 1) -> None:
        self.sink = sink
        self.on_insert = on_insert
        self.inserted: list[list[bytes]] = []

    def insert(self, decoded) -> None:  # noqa: ANN001
        self.sink.insert(decoded)
        self.inserted.append(list(decoded.ids))
        if len(self.inserted) == self.on_insert:
            raise SimulatedKill()


# ----- 1. happy path ---------------------------------------------------------------------------
def test_entries_become_rows_acknowledged_and_trimmed(settings, redis_client, clean_clickhouse, workers):
    client_ts = 1_779_999_999_001
    ids = [
        add(
            redis_client,
            settings,
            event(
                "a",
                event_type="conversion",
                conversion_value=49.5,
                metadata_json='{"plan":"pro","seats":3}',
                client_ts_ms=client_ts,
                variant_key="treatment",
            ),
        ),
        add(redis_client, settings, event("b1"), event("b2", event_type="cta_click"), event("b3")),
        add(redis_client, settings, event("c", conversion_value=0.0, event_type="conversion")),
    ]
    ids += add_many(redis_client, settings, 17, start=100)
    expected_rows = 1 + 3 + 1 + 17

    worker = workers("w1")
    worker.run(burst=True)

    assert count_events(clean_clickhouse) == expected_rows
    assert raw_count(clean_clickhouse) == expected_rows
    assert worker.inserted_rows == expected_rows
    rows = (
        clean_clickhouse.client()
        .query(
            "SELECT event_id, experiment_key, variant_key, session_id, event_type, path, conversion_value, "
            "metadata, toUnixTimestamp64Milli(client_ts), toUnixTimestamp64Milli(received_at) "
            "FROM abacus.events FINAL WHERE event_id IN ('ev-a', 'ev-b2', 'ev-c', 'ev-100') ORDER BY event_id"
        )
        .result_rows
    )
    assert rows == [
        ("ev-100", "homepage_hero_test", "control", "session_100", "impression", "/", None, "{}", None, RECEIVED_MS),
        (
            "ev-a",
            "homepage_hero_test",
            "treatment",
            "session_a",
            "conversion",
            "/",
            49.5,
            '{"plan":"pro","seats":3}',
            client_ts,
            RECEIVED_MS,
        ),
        ("ev-b2", "homepage_hero_test", "control", "session_b2", "cta_click", "/", None, "{}", None, RECEIVED_MS),
        ("ev-c", "homepage_hero_test", "control", "session_c", "conversion", "/", 0.0, "{}", None, RECEIVED_MS),
    ]
    metadata = (
        clean_clickhouse.client()
        .query(
            "SELECT JSONExtractString(metadata, 'plan'), JSONExtractInt(metadata, 'seats') "
            "FROM abacus.events FINAL WHERE event_id = 'ev-a'"
        )
        .result_rows
    )
    assert metadata == [("pro", 3)]
    # NULL stays NULL and 0.0 stays a value: conversions with value 0 are not "no value".
    assert count_events(clean_clickhouse, "conversion_value IS NULL") == expected_rows - 2

    assert pending(redis_client, settings) == []
    assert redis_client.xlen(settings.stream) == 0, "acknowledged entries must be trimmed"
    assert redis_client.xrange(settings.stream, min=ids[0], max=ids[-1]) == []
    assert batch_consumers(redis_client, settings) == {}
    assert dead_letters(redis_client, settings) == []


# ----- 2. batching -----------------------------------------------------------------------------
def test_inserts_in_batches_of_batch_size(settings, redis_client, merges_stopped, workers):
    n, batch = 23, 5
    add_many(redis_client, settings, n)
    worker = workers("w1", batch_size=batch)
    worker.run(burst=True)

    assert count_events(merges_stopped) == n
    assert worker.inserted_rows == n
    # Merges are stopped and every row is in one partition: one insert == one part.
    assert active_parts(merges_stopped) == math.ceil(n / batch)
    assert pending(redis_client, settings) == []
    # Each batch was read as a consumer of its own and acknowledged by deleting it.
    assert batch_consumers(redis_client, settings) == {}


def test_partial_batch_is_flushed_after_batch_wait(settings, redis_client, clean_clickhouse, workers):
    worker = workers("w1", batch_size=1000, batch_wait_ms=300)
    with running(worker):
        wait_for(lambda: redis_client.exists(settings.stream))  # the group exists: the worker is reading
        time.sleep(0.2)
        for round_ in range(2):
            started = time.monotonic()
            add(redis_client, settings, event(f"lonely-{round_}"))
            wait_for(lambda: count_events(clean_clickhouse) == round_ + 1, timeout=2.0, interval=0.01)
            elapsed = time.monotonic() - started
            # Held for about one batch_wait waiting for company, then inserted alone.
            assert 0.25 <= elapsed < 2.0, elapsed
            assert wait_for(lambda: pending_count(redis_client, settings) == 0, timeout=2.0)
    assert worker.inserted_rows == 2


def test_a_burst_stores_its_partial_last_batch_without_waiting_for_company(settings, redis_client, clean_clickhouse, workers):
    """A burst drains what is queued and exits: the last, partial batch is not held for
    batch_wait in the hope of more entries (it used to be, at the end of every burst)."""
    add_many(redis_client, settings, 7)
    worker = workers("w1", batch_size=5, batch_wait_ms=10_000)
    started = time.monotonic()
    worker.run(burst=True)
    assert time.monotonic() - started < 5.0, "the burst waited for entries that were never coming"
    assert event_ids(clean_clickhouse) == sorted(f"ev-{i}" for i in range(7))
    assert pending(redis_client, settings) == []


# ----- 3. killed after insert, before XACK -----------------------------------------------------
def test_worker_killed_after_insert_recovers_without_duplicates(settings, redis_client, merges_stopped, workers):
    """Killed after its insert, before the acknowledgement: the restart re-forms the very batch
    from its consumer's pending entries, also when the batch had a poison entry in it
    (dead-lettered and acked before the insert), though its batch size would now split it."""
    ensure_group(redis_client, settings)
    good_before = add_many(redis_client, settings, 3)
    poison = redis_client.xadd(settings.stream, {b"e": b"\xc1 not msgpack"})
    good_after = add_many(redis_client, settings, 3, start=3)
    add_many(redis_client, settings, 5, start=10)  # beyond the first batch

    doomed = workers("w1", batch_size=7, wrap_sink=KilledAfterInsert)
    with pytest.raises(SimulatedKill):
        doomed.run(burst=True)
    assert doomed.sink.inserted == [good_before + good_after]  # type: ignore[attr-defined]
    assert raw_count(merges_stopped) == 6
    assert pending_count(redis_client, settings) == 6
    # The batch's own consumer holds exactly its entries.
    assert list(batch_consumers(redis_client, settings).values()) == [6]
    assert [entry[b"source_id"] for _, entry in dead_letters(redis_client, settings)] == [poison]

    restarted = workers("w1", batch_size=3)
    restarted.run(burst=True)

    assert raw_count(merges_stopped) == 11, "the recovered batch must deduplicate against the first insert"
    assert count_events(merges_stopped) == 11
    assert pending(redis_client, settings) == []
    assert len(dead_letters(redis_client, settings)) == 1
    assert batch_consumers(redis_client, settings) == {}


def test_killed_with_next_batch_read_ahead_recovers_exactly_the_batch_in_flight(settings, redis_client, merges_stopped, workers):
    """The loop reads the next batch while one is being stored, so a kill leaves both pending,
    each for its own consumer: the restart re-forms exactly the batch in flight (less the poison
    acked before its insert), then the one read ahead."""
    ensure_group(redis_client, settings)
    add_many(redis_client, settings, 3)
    in_flight = add_many(redis_client, settings, 1, start=3)
    redis_client.xadd(settings.stream, {b"e": b"\xc1 not msgpack"})
    in_flight += add_many(redis_client, settings, 1, start=4)
    add_many(redis_client, settings, 4, start=5)  # read ahead while the second batch is stored

    doomed = workers("w1", batch_size=3, wrap_sink=lambda sink: KilledAfterInsert(sink, on_insert=2))
    with pytest.raises(SimulatedKill):
        doomed.run(burst=True)
    assert doomed.sink.inserted[-1] == in_flight  # type: ignore[attr-defined]
    assert raw_count(merges_stopped) == 5
    held = batch_consumers(redis_client, settings)
    assert len(held) == 2 and 2 in held.values(), held  # the batch in flight (poison acked), and the one read ahead

    restarted = workers("w1", batch_size=3)
    restarted.run(burst=True)

    assert raw_count(merges_stopped) == 9, "the batch in flight must deduplicate against its first insert"
    assert count_events(merges_stopped) == 9
    assert pending(redis_client, settings) == []
    assert len(dead_letters(redis_client, settings)) == 1


def test_reads_sent_ahead_fill_batches_of_batch_size_and_leave_nothing_behind(settings, redis_client, merges_stopped, workers):
    """A batch of several reads asks for the next read before framing the last one; the read sent
    ahead is collected into the same batch, so batches keep their size and no entry is left
    delivered but unprocessed once the burst ends."""
    add_many(redis_client, settings, 1_200)  # reads of at most 500 entries: 500 + 500 (sent ahead), then 200
    worker = workers("w1", batch_size=1_000)
    worker.run(burst=True)

    assert raw_count(merges_stopped) == 1_200
    assert count_events(merges_stopped) == 1_200
    assert active_parts(merges_stopped) == 2  # 1,000 rows, then 200
    assert pending(redis_client, settings) == []


def test_a_read_sent_ahead_overshooting_the_estimate_joins_its_batch(settings, redis_client, merges_stopped, workers):
    """Reads are sized by the rows per entry seen so far (one, to begin with); when entries turn
    out to hold more, the read already sent ahead still joins the batch in hand (which then holds
    more than batch_size rows) instead of being left delivered and unprocessed."""
    ensure_group(redis_client, settings)
    pipe = redis_client.pipeline(transaction=False)
    for i in range(0, 3_000, 3):
        pipe.xadd(settings.stream, envelope(event(i), event(i + 1), event(i + 2)))  # three per entry
    pipe.execute()
    worker = workers("w1", batch_size=1_000)
    # Reads of 500 entries: the first already holds 1,500 rows, and the second was sent ahead.
    worker.run(burst=True)

    assert raw_count(merges_stopped) == 3_000
    assert count_events(merges_stopped) == 3_000
    assert active_parts(merges_stopped) == 1  # both reads in one batch
    assert pending(redis_client, settings) == []


class LosesFirstReadSentAhead:
    """Lets the first read sent ahead reach Valkey, which delivers its entries (now pending), then
    drops the connection before the reply is read: a network failure at the worst moment."""

    def __init__(self, consumer) -> None:  # noqa: ANN001
        self.consumer = consumer
        self.lost = 0

    def __call__(self, count: int, as_consumer: str | None = None):  # noqa: ANN204
        sent = type(self.consumer).request_new(self.consumer, count, as_consumer)
        if self.lost:
            return sent
        self.lost = 1
        connection = sent._connection
        assert connection.can_read(timeout=5), "Valkey answered the read sent ahead"
        connection.disconnect()
        # The worker collects the real read, whose connection is now gone: collecting it raises
        # as a reset connection does (and a second collection would be a bug of the worker's).
        return sent


def test_entries_of_a_read_sent_ahead_and_lost_are_recovered_once(settings, redis_client, merges_stopped, workers, caplog):
    add_many(redis_client, settings, 1_200)
    worker = workers("w1", batch_size=1_000)
    worker.consumer.request_new = LosesFirstReadSentAhead(worker.consumer)  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="worker.loop"):
        worker.run(burst=True)

    assert worker.consumer.request_new.lost == 1, "the failure was staged"
    assert "Connection closed by server" in caplog.text or "Error while reading" in caplog.text, caplog.text
    # The 1,000 entries delivered before the failure were pending, recovered and stored once.
    assert raw_count(merges_stopped) == 1_200
    assert count_events(merges_stopped) == 1_200
    assert pending(redis_client, settings) == []


def test_reads_take_fields_as_redis_sent_them(settings, redis_client, workers):
    """Reads skip redis-py's dict building; entries still decode, and dead letters keep every field."""
    worker = workers("w1")
    worker.consumer.ensure_group()
    good = add(redis_client, settings, event(1), event(2))
    odd = redis_client.xadd(settings.stream, {b"x": b"1", b"e": envelope(event(3))[b"e"]})
    bad = redis_client.xadd(settings.stream, {b"y": b"2", b"z": b"3"})

    entries = worker.consumer.read_new(10, None)
    assert [entry_id for entry_id, _ in entries] == [good, odd, bad]
    decoded = decode_entries(entries)
    assert decoded.ids == [good, odd]
    # The framed rows, back to back, read as one msgpack array: the events in stream order.
    rows = msgspec.msgpack.decode(b"\xdd" + decoded.row_count.to_bytes(4, "big") + decoded.rows_msgpack())
    assert [row[0] for row in rows] == ["ev-1", "ev-2", "ev-3"]
    assert [(entry_id, why) for entry_id, _, why in decoded.poison] == [(bad, "entry has no envelope field")]
    worker.consumer.dead_letter(bad, decoded.poison[0][1], "test")
    [(_, parked)] = dead_letters(redis_client, settings)
    assert parked[b"y"] == b"2" and parked[b"z"] == b"3" and parked[b"source_id"] == bad


def test_killed_with_two_batches_stored_and_unacknowledged_recovers_both_exactly(settings, redis_client, merges_stopped, workers):
    """A batch's acknowledgement runs while the next batch is inserted: a kill can leave two
    stored batches unacknowledged. Each is pending for its own consumer, so the restart re-forms
    each with its own token (ClickHouse drops both re-inserts), then batches the rest."""
    ensure_group(redis_client, settings)
    add_many(redis_client, settings, 3)
    add_many(redis_client, settings, 4, start=3)
    add_many(redis_client, settings, 2, start=7)  # never read before the kill
    sink = ClickHouseSink(merges_stopped)
    for seq, count in enumerate((3, 4)):
        sink.insert(decode_entries(read_as(redis_client, settings, f"w1#batch-0badc0de-{seq}", count)))
    assert raw_count(merges_stopped) == 7

    restarted = workers("w1", batch_size=100)  # a batch size that would otherwise merge them
    restarted.run(burst=True)

    assert raw_count(merges_stopped) == 9, "both batches must deduplicate against their first inserts"
    assert event_ids(merges_stopped) == sorted(f"ev-{i}" for i in range(9))
    assert restarted.inserted_rows == 9  # the two re-inserts (dropped by ClickHouse), then the rest
    assert pending(redis_client, settings) == []
    assert batch_consumers(redis_client, settings) == {}


def test_a_batch_consumer_left_by_a_crash_is_re_formed_with_the_same_token(settings, redis_client, merges_stopped, workers):
    """What a worker killed after its insert leaves: the batch's entries pending for the batch's
    own consumer. The restart re-forms the batch from them, so its re-insert is dropped."""
    ensure_group(redis_client, settings)
    add_many(redis_client, settings, 5)
    entries = read_as(redis_client, settings, "w1#batch-0badc0de-7", 100)
    ClickHouseSink(merges_stopped).insert(decode_entries(entries))
    add_many(redis_client, settings, 2, start=5)

    workers("w1", batch_size=3).run(burst=True)  # a batch size that would split the old batch

    assert raw_count(merges_stopped) == 7, "the re-formed batch must deduplicate against its first insert"
    assert event_ids(merges_stopped) == sorted(f"ev-{i}" for i in range(7))
    assert pending(redis_client, settings) == []
    assert batch_consumers(redis_client, settings) == {}


def test_only_empty_idle_batch_consumers_are_dropped(settings, redis_client, workers):
    ensure_group(redis_client, settings)
    add_many(redis_client, settings, 3)
    read_as(redis_client, settings, "dead#batch-1-0", 3)  # still holds its batch
    for name in ("dead#batch-1-1", "dead", "idle#batch-2-0"):
        redis_client.xgroup_createconsumer(settings.stream, settings.consumer_group, name)
    consumer = workers("w1").consumer

    assert consumer.drop_idle_batch_consumers(60_000) == 0, "none has been idle for a minute"
    time.sleep(0.05)
    assert consumer.drop_idle_batch_consumers(20) == 2
    names = {c["name"] for c in redis_client.xinfo_consumers(settings.stream, settings.consumer_group)}
    assert names == {b"dead#batch-1-0", b"dead"}  # the one holding entries, and a plain consumer
    assert pending_count(redis_client, settings) == 3

    assert consumer.release_if_empty("dead#batch-1-0") is False
    assert pending_count(redis_client, settings) == 3


def test_entries_of_a_dead_batch_consumer_are_claimed_and_it_is_dropped(settings, redis_client, clean_clickhouse, workers):
    ensure_group(redis_client, settings)
    add_many(redis_client, settings, 6)
    read_as(redis_client, settings, "dead#batch-1-0", 6)  # read, then the process died for good
    time.sleep(0.25)

    workers("w2", claim_idle_ms=200, batch_size=4).run(burst=True)

    assert event_ids(clean_clickhouse) == sorted(f"ev-{i}" for i in range(6))
    assert pending(redis_client, settings) == []
    assert batch_consumers(redis_client, settings) == {}


def test_a_claimed_batch_killed_after_its_insert_is_re_formed_with_the_same_token(
    settings, redis_client, merges_stopped, workers
):
    """Entries claimed from a dead consumer are claimed as a batch consumer of their own: a kill
    after their insert leaves exactly that batch pending for it, and the restart re-inserts it
    with the same token, though its batch size would now split it."""
    ensure_group(redis_client, settings)
    add_many(redis_client, settings, 6)
    read_as(redis_client, settings, "dead", 6)  # read, then the process died for good
    time.sleep(0.25)

    doomed = workers("w2", claim_idle_ms=200, batch_size=100, wrap_sink=KilledAfterInsert)
    with pytest.raises(SimulatedKill):
        doomed.run(burst=True)
    assert raw_count(merges_stopped) == 6
    assert list(batch_consumers(redis_client, settings).values()) == [6]

    restarted = workers("w2", claim_idle_ms=60_000, batch_size=4)  # nothing is claimed again
    restarted.run(burst=True)

    assert raw_count(merges_stopped) == 6, "the claimed batch must deduplicate against its first insert"
    assert restarted.inserted_rows == 6
    assert event_ids(merges_stopped) == sorted(f"ev-{i}" for i in range(6))
    assert pending(redis_client, settings) == []
    assert batch_consumers(redis_client, settings) == {}


def test_killed_after_insert_claimed_as_different_batch_counts_once_with_final(settings, redis_client, clean_clickhouse, workers):
    ensure_group(redis_client, settings)
    add_many(redis_client, settings, 12)
    entries = read_as(redis_client, settings, "w1", 100)
    ClickHouseSink(clean_clickhouse).insert(decode_entries(entries))
    # w1 never comes back; w2 claims its entries once they are idle, in batches of another size.
    time.sleep(0.25)
    worker = workers("w2", claim_idle_ms=200, batch_size=5)
    worker.run(burst=True)

    assert worker.inserted_rows == 12
    assert raw_count(clean_clickhouse) >= 12  # other tokens: duplicates may be stored...
    assert count_events(clean_clickhouse) == 12  # ...but FINAL counts every event once
    assert event_ids(clean_clickhouse) == sorted(f"ev-{i}" for i in range(12))
    assert pending(redis_client, settings) == []
    assert dead_letters(redis_client, settings) == []


def test_same_entries_reinserted_are_dropped_by_their_dedup_token(settings, redis_client, merges_stopped):
    """The token, not the data, identifies a batch: a re-insert of the same entries is dropped
    even if the rows were to differ, and another batch with identical rows is not."""
    sink = ClickHouseSink(merges_stopped)
    ms = time.time_ns() // 1_000_000  # entry ids unique to this test run
    a, b, c, d = (f"{ms}-{seq}".encode() for seq in range(4))
    sink.insert(decode_entries([(a, envelope(event(1))), (b, envelope(event(2)))]))
    sink.insert(decode_entries([(a, envelope(event(1, path="/changed"))), (b, envelope(event(2)))]))
    assert raw_count(merges_stopped) == 2
    sink.insert(decode_entries([(c, envelope(event(1))), (d, envelope(event(2)))]))
    assert raw_count(merges_stopped) == 4
    assert count_events(merges_stopped) == 2  # same event ids: FINAL still counts them once


def test_a_temporary_directory_chdb_would_read_as_a_glob_is_refused_up_front(clean_clickhouse, monkeypatch, tmp_path):
    """chDB's file() reads the staged batch's path as a glob; one that matches nothing reads zero
    rows without an error, so the batch would be acknowledged unstored. Refused when built."""
    globby = tmp_path / "batches{a,b}"
    globby.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(globby))
    with pytest.raises(ValueError, match="glob"):
        ClickHouseSink(clean_clickhouse)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ClickHouseSink(clean_clickhouse).insert(decode_entries([(b"1-1", envelope(event(1)))]))
    assert raw_count(clean_clickhouse) == 1


# ----- 4. killed before insert -----------------------------------------------------------------
def test_killed_before_insert_entries_are_claimed_by_another_worker(settings, redis_client, clean_clickhouse, workers):
    ensure_group(redis_client, settings)
    add_many(redis_client, settings, 30)
    assert len(read_as(redis_client, settings, "dead", 30)) == 30  # read, then the process died
    add_many(redis_client, settings, 5, start=30)

    survivor = workers("w2", claim_idle_ms=60_000, batch_size=8)
    survivor.run(burst=True)
    # Not idle for claim_idle_ms: the entries might belong to a live consumer, so they are left alone.
    assert count_events(clean_clickhouse) == 5
    assert pending_count(redis_client, settings) == 30

    time.sleep(0.25)
    survivor = workers("w2", claim_idle_ms=200, batch_size=8)
    survivor.run(burst=True)

    assert raw_count(clean_clickhouse) == 35
    assert event_ids(clean_clickhouse) == sorted(f"ev-{i}" for i in range(35))
    assert pending(redis_client, settings) == []
    assert dead_letters(redis_client, settings) == []


# ----- 5. poison entries -----------------------------------------------------------------------
def test_poison_entries_go_to_dead_letter_and_the_rest_flows(settings, redis_client, clean_clickhouse, workers):
    good = [add(redis_client, settings, event(0))]
    garbage = redis_client.xadd(settings.stream, {b"e": b"\xc1\xff\x00 definitely not msgpack"})
    good.append(add(redis_client, settings, event(1), event(2)))
    no_envelope = redis_client.xadd(settings.stream, {b"x": b"1"})
    wrong_shape = redis_client.xadd(settings.stream, {b"e": msgspec.msgpack.encode({"events": [[1, 2]]})})
    good.append(add(redis_client, settings, event(3)))

    worker = workers("w1")
    worker.run(burst=True)

    assert event_ids(clean_clickhouse) == ["ev-0", "ev-1", "ev-2", "ev-3"]
    parked = {fields[b"source_id"]: fields for _, fields in dead_letters(redis_client, settings)}
    assert set(parked) == {garbage, no_envelope, wrong_shape}
    assert parked[garbage][b"reason"].startswith(b"undecodable envelope")
    assert parked[garbage][b"e"] == b"\xc1\xff\x00 definitely not msgpack"  # kept for replay
    assert parked[no_envelope][b"reason"] == b"entry has no envelope field"
    assert parked[no_envelope][b"x"] == b"1"
    assert parked[wrong_shape][b"reason"].startswith(b"undecodable envelope")
    assert all(int(fields[b"dead_at_ms"]) > 0 for fields in parked.values())
    assert pending(redis_client, settings) == []
    assert redis_client.xlen(settings.stream) == 0


@pytest.mark.parametrize("path", ["own_batch", "claimed"])
def test_entry_delivered_too_often_is_dead_lettered_not_inserted(settings, redis_client, clean_clickhouse, workers, path):
    ensure_group(redis_client, settings)
    survivor_entry = add(redis_client, settings, event("survivor"))  # at the limit: still tried
    doomed_entry = add(redis_client, settings, event("doomed"))  # beyond it: parked
    owner = "w1#batch-0badc0de-0" if path == "own_batch" else "crasher"
    read_as(redis_client, settings, owner, 2)  # delivery 1 for both
    # Every crash-and-restart redelivers: bump "doomed" to 3 deliveries, "survivor" to 2.
    for _ in range(2):
        if path == "own_batch":
            # XREADGROUP with an id re-reads the consumer's pending entries *after* that id.
            redis_client.xreadgroup(settings.consumer_group, owner, {settings.stream: survivor_entry}, count=1)
        else:
            redis_client.xclaim(settings.stream, settings.consumer_group, owner, 0, [doomed_entry])
    if path == "own_batch":
        redis_client.xreadgroup(settings.consumer_group, owner, {settings.stream: "0"}, count=1)
    else:
        redis_client.xclaim(settings.stream, settings.consumer_group, owner, 0, [survivor_entry])
    counts = {row["message_id"]: row["times_delivered"] for row in pending(redis_client, settings)}
    assert counts == {survivor_entry: 2, doomed_entry: 3}

    if path == "claimed":
        time.sleep(0.25)
    worker = workers("w1", max_deliveries=3, claim_idle_ms=200)
    worker.run(burst=True)  # its own read/claim is delivery 3 (survivor) and 4 (doomed)

    assert event_ids(clean_clickhouse) == ["ev-survivor"]
    parked = dead_letters(redis_client, settings)
    assert [(fields[b"source_id"], fields[b"reason"]) for _, fields in parked] == [(doomed_entry, b"delivered 4 times")]
    assert msgspec.msgpack.decode(parked[0][1][b"e"], type=StreamEnvelope).events[0].event_id == "ev-doomed"
    assert pending(redis_client, settings) == []


def test_entry_clickhouse_rejects_is_isolated_and_dead_lettered(settings, redis_client, clean_clickhouse, workers):
    add_many(redis_client, settings, 6)
    # Decodes fine but cannot be stored: a client timestamp beyond DateTime64's Int64.
    rejected = add(redis_client, settings, event("huge-ts", client_ts_ms=2**64 - 1))
    add_many(redis_client, settings, 5, start=6)

    worker = workers("w1", max_deliveries=2)
    worker.run(burst=True)

    assert event_ids(clean_clickhouse) == sorted(f"ev-{i}" for i in range(11))
    parked = dead_letters(redis_client, settings)
    assert len(parked) == 1
    assert parked[0][1][b"source_id"] == rejected
    assert parked[0][1][b"reason"].startswith(b"insert rejected")
    assert pending(redis_client, settings) == []


# ----- 6. ClickHouse unavailable ---------------------------------------------------------------
def test_clickhouse_unavailable_loses_nothing(settings, redis_client, clean_clickhouse, workers, caplog):
    caplog.set_level(logging.WARNING, logger="worker")
    ensure_group(redis_client, settings)
    add(redis_client, settings, event("m1"), event("m2"), event("m3"))
    add_many(redis_client, settings, 20)

    # A closed local port: every request is a real "connection refused".
    stranded = workers("w1", clickhouse_url=f"http://127.0.0.1:{free_port()}")
    with running(stranded, stop_within=3.0):
        wait_for(lambda: pending_count(redis_client, settings) == 21)
        wait_for(lambda: sum("ClickHouse unavailable" in r.getMessage() for r in caplog.records) >= 2, timeout=5)
        assert dead_letters(redis_client, settings) == []
        assert pending_count(redis_client, settings) == 21
        assert stranded.inserted_rows == 0
        stop_requested = time.monotonic()
    assert time.monotonic() - stop_requested < 3.0
    assert any("batch left pending" in r.getMessage() for r in caplog.records)
    assert pending_count(redis_client, settings) == 21, "nothing may be acked without an insert"
    assert count_events(clean_clickhouse) == 0

    recovered = workers("w1")
    recovered.run(burst=True)
    assert raw_count(clean_clickhouse) == 23
    assert count_events(clean_clickhouse) == 23
    assert pending(redis_client, settings) == []
    assert dead_letters(redis_client, settings) == []


# ----- 7. Redis unavailable --------------------------------------------------------------------
def test_redis_unavailable_backs_off_and_stops_promptly(settings, workers, caplog):
    caplog.set_level(logging.WARNING, logger="worker.loop")
    worker = workers("w1", redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with running(worker, stop_within=2.0) as thread:
        wait_for(lambda: sum("Redis unavailable" in r.getMessage() for r in caplog.records) >= 2, timeout=5)
        time.sleep(0.3)
        assert thread.is_alive(), "the worker must keep retrying, not crash"
        attempts = sum("Redis unavailable" in r.getMessage() for r in caplog.records)
        # Backing off (0.5 s, 1 s, ...), not spinning.
        assert attempts <= 4, attempts
    assert worker.inserted_rows == 0


# ----- 8. several workers share a group --------------------------------------------------------
def test_two_workers_share_the_load_and_store_every_row_once(settings, redis_client, clean_clickhouse, workers):
    n = 3000
    first = workers("w1", batch_size=100, claim_idle_ms=60_000)
    second = workers("w2", batch_size=100, claim_idle_ms=60_000)
    with running(first), running(second):
        # Both are blocked waiting for entries.
        wait_for(lambda: redis_client.exists(settings.stream) and blocked_stream_readers(redis_client) == 2)
        time.sleep(0.1)
        for start in range(0, n, 100):
            add_many(redis_client, settings, 100, start=start)
            time.sleep(0.005)
        wait_for(lambda: first.inserted_rows + second.inserted_rows == n, timeout=20)
    assert first.inserted_rows > 0 and second.inserted_rows > 0, (first.inserted_rows, second.inserted_rows)
    assert count_events(clean_clickhouse) == n
    assert raw_count(clean_clickhouse) == n
    assert pending(redis_client, settings) == []
    assert dead_letters(redis_client, settings) == []


# ----- 9. trimming keeps unacknowledged entries ------------------------------------------------
def test_trim_never_removes_pending_entries(settings, redis_client, clean_clickhouse, workers):
    ensure_group(redis_client, settings)
    old_ids = add_many(redis_client, settings, 10)
    read_as(redis_client, settings, "other", 10)
    held_ids = add_many(redis_client, settings, 5, start=10)
    assert [entry_id for entry_id, _ in read_as(redis_client, settings, "slow", 5)] == held_ids
    redis_client.xack(settings.stream, settings.consumer_group, *old_ids)  # "other" finished its batch
    new_ids = add_many(redis_client, settings, 20, start=15)

    worker = workers("w1", batch_size=7, claim_idle_ms=60_000)
    worker.run(burst=True)
    assert worker.inserted_rows == 20
    assert pending_count(redis_client, settings) == 5

    remaining = redis_client.xrange(settings.stream)
    # Acknowledged entries before the oldest pending one are gone; the pending ones are intact.
    assert [entry_id for entry_id, _ in remaining][:5] == held_ids
    assert all(fields.get(b"e") for _, fields in remaining[:5]), "pending entries must keep their data"
    assert not set(old_ids) & {entry_id for entry_id, _ in remaining}
    assert {entry_id for entry_id, _ in remaining[5:]} <= set(new_ids)

    # Once the held entries are done (claimed from the slow consumer), trimming empties the stream.
    time.sleep(0.25)
    workers("w2", claim_idle_ms=200).run(burst=True)
    assert count_events(clean_clickhouse) == 25
    assert raw_count(clean_clickhouse) == 25
    assert pending(redis_client, settings) == []
    assert redis_client.xlen(settings.stream) == 0


def test_trim_tolerates_acks_racing_it(settings, redis_client, workers):
    """With several workers, the last pending entry can be acked between trim's XINFO GROUPS and
    its XPENDING; trimming must not crash the worker then (nor trim anything unacknowledged)."""
    ensure_group(redis_client, settings)
    consumer = workers("trimmer").consumer
    stop = threading.Event()
    cycles = [0]
    lost: list[bytes] = []

    def churn() -> None:
        other = redis.Redis.from_url(settings.redis_url)
        try:
            while not stop.is_set():
                added = other.xadd(settings.stream, envelope(event(cycles[0])))
                got = read_as(other, settings, "churn", 1)
                if [(entry_id, bool(fields)) for entry_id, fields in got] != [(added, True)]:
                    lost.append(added)  # trimmed before it was delivered
                other.xack(settings.stream, settings.consumer_group, *[entry_id for entry_id, _ in got])
                cycles[0] += 1
        finally:
            other.close()

    thread = threading.Thread(target=churn, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            consumer.trim_acknowledged()
    finally:
        stop.set()
        thread.join(5)
    assert cycles[0] > 50
    assert lost == []
    consumer.trim_acknowledged()
    assert redis_client.xlen(settings.stream) == 0


# ----- 10. stop request while collecting -------------------------------------------------------
def test_stop_while_collecting_inserts_and_acks_the_batch_in_hand(settings, redis_client, clean_clickhouse, workers):
    worker = workers("w1", batch_size=1000, batch_wait_ms=2000)
    done = threading.Event()

    def run() -> None:
        worker.run()
        done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: redis_client.exists(settings.stream))
        add_many(redis_client, settings, 7)
        # The worker holds them (pending), still waiting for the batch to fill up or batch_wait to pass.
        wait_for(lambda: pending_count(redis_client, settings) == 7, timeout=2)
        assert count_events(clean_clickhouse) == 0
        worker.request_stop()
        assert done.wait(4.0), "run() must return after a stop request"
    finally:
        worker.request_stop()
        thread.join(5)
    # By the time run() returned, the batch in hand was stored and acknowledged.
    assert count_events(clean_clickhouse) == 7
    assert pending(redis_client, settings) == []
    assert worker.inserted_rows == 7
