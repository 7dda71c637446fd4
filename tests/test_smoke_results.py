from tests.conftest import count_events, wait_for
from tests.helpers import auth, beacon, serve_client


def test_results_smoke(settings, clean_clickhouse):
    with serve_client(settings) as client:
        r = client.post("/api/experiments/event", json=beacon())
        assert r.status_code == 202, r.text
        wait_for(lambda: count_events(clean_clickhouse) == 1)
        r = client.get("/api/v1/experiments/results", headers=auth(settings))
        assert r.status_code == 200, r.text
