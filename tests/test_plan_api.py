"""GET /api/v1/experiments/plan against statsmodels' sample size for the two-proportion z-test."""

from __future__ import annotations

import math

import pytest
from statsmodels.stats.proportion import samplesize_proportions_2indep_onetail

from tests.helpers import auth, serve_client


@pytest.fixture()
def client(settings):
    with serve_client(settings) as test_client:
        yield test_client


def test_plan_answers_sessions_per_variant(client, settings):
    headers = auth(settings, "analyst", "ana")
    response = client.get("/api/v1/experiments/plan?baseline_rate=0.1&mde=0.05&alpha=0.05&power=0.8&variants=3", headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    expected = math.ceil(samplesize_proportions_2indep_onetail(0.005, 0.1, 0.8, ratio=1, alpha=0.025))
    assert body["sessions_per_variant"] == expected and body["total_sessions"] == 3 * expected
    assert body["alpha_per_comparison"] == pytest.approx(0.025)
    defaults = client.get("/api/v1/experiments/plan?baseline_rate=0.02&mde=-0.1", headers=headers).json()
    assert defaults["sessions_per_variant"] == math.ceil(samplesize_proportions_2indep_onetail(-0.002, 0.02, 0.8))


@pytest.mark.parametrize(
    "query, field",
    [
        ("baseline_rate=0&mde=0.1", "baseline_rate"),
        ("baseline_rate=1.5&mde=0.1", "baseline_rate"),
        ("baseline_rate=0.1&mde=0", "mde"),
        ("baseline_rate=0.6&mde=1", "mde"),
        ("baseline_rate=0.1&mde=nan", "mde"),
        ("baseline_rate=0.1&mde=0.1&alpha=1", "alpha"),
        ("baseline_rate=0.1&mde=0.1&power=0", "power"),
        ("baseline_rate=0.1&mde=0.1&variants=1", "variants"),
    ],
)
def test_plan_rejects_bad_input_with_400(client, settings, query, field):
    response = client.get(f"/api/v1/experiments/plan?{query}", headers=auth(settings, "analyst", "ana"))
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field


def test_plan_needs_a_token_and_a_number(client, settings):
    assert client.get("/api/v1/experiments/plan?baseline_rate=0.1&mde=0.1").status_code == 401
    response = client.get("/api/v1/experiments/plan?baseline_rate=x&mde=0.1", headers=auth(settings, "analyst", "ana"))
    assert response.status_code == 400
