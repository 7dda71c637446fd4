"""The beacon `timestamp` formats the README promises (RFC 3339), and the ones it says are refused."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tests.conftest import count_events, wait_for
from tests.helpers import beacon, serve_client


@pytest.fixture()
def client(settings):
    with serve_client(settings) as test_client:
        yield test_client


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("2026-01-02T03:04:05.123Z", datetime(2026, 1, 2, 3, 4, 5, 123000)),
        ("2026-01-02T03:04:05+02:00", datetime(2026, 1, 2, 1, 4, 5)),
        ("2026-01-02 03:04:05Z", datetime(2026, 1, 2, 3, 4, 5)),
        ("2026-01-02T03:04:05", datetime(2026, 1, 2, 3, 4, 5)),  # no offset: UTC
    ],
)
def test_rfc3339_timestamps_are_accepted_and_stored_in_utc(client, clickhouse, sent, stored):
    answer = client.post("/api/experiments/event", json=beacon(timestamp=sent, session_id="ts_session"))
    assert answer.status_code == 202 and answer.json()["accepted"] is True, answer.text
    wait_for(lambda: count_events(clickhouse, "session_id = 'ts_session'") == 1)
    (client_ts,) = (
        clickhouse.client().query("SELECT client_ts FROM abacus.events FINAL WHERE session_id = 'ts_session'").result_rows[0]
    )
    assert client_ts.replace(tzinfo=None) == stored and (
        client_ts.tzinfo in (None, timezone.utc) or client_ts.utcoffset().total_seconds() == 0
    )


@pytest.mark.parametrize("sent", ["2026-01-02", "20260102T030405Z", "yesterday"])
def test_other_formats_are_a_400_naming_the_field(client, sent):
    answer = client.post("/api/experiments/event", json=beacon(timestamp=sent))
    assert answer.status_code == 400 and answer.json()["field"] == "$.timestamp", answer.text
