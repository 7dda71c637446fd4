"""Schemathesis against the whole serve app on real Valkey and chDB (issue 11): generated valid and
invalid requests for every documented operation never get a 5xx, every status they get is one
the OpenAPI schema documents for that operation, and every body matches its documented schema (the
typed results, and the one error body on every error). Bounded and derandomized (a fixed seed), so a
failure reproduces."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance, status_code_conformance
from schemathesis.core.failures import FailureGroup

from tests.helpers import auth, serve_client

pytestmark = pytest.mark.slow
EXAMPLES_PER_OPERATION = 12
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


def test_generated_requests_get_no_5xx_and_only_documented_statuses(settings):
    headers = auth(settings, "admin", "schemathesis")
    with serve_client(settings) as client:
        schema = schemathesis.openapi.from_dict(client.get("/schema/openapi.json").json())
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 19
        failures: list[str] = []
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @hypothesis_settings(
                    max_examples=EXAMPLES_PER_OPERATION,
                    derandomize=True,
                    database=None,
                    deadline=None,
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=operation.as_strategy(generation_mode=mode))
                def check(case):  # type: ignore[no-untyped-def]
                    kwargs = case.as_transport_kwargs(base_url="http://testserver.local", headers=headers)
                    if isinstance(kwargs.get("data"), (bytes, str)):
                        kwargs["content"] = kwargs.pop("data")  # raw bodies (invalid JSON) go as content
                    sent = {
                        k: v for k, v in kwargs.items() if k in ("method", "url", "headers", "params", "json", "content", "data")
                    }
                    response = client.request(**sent)
                    try:
                        case.validate_response(response, checks=CHECKS)
                    except (Exception, FailureGroup) as exc:  # collect every operation's failure, then report them together
                        failures.append(f"{operation.label} ({mode.value}): {response.status_code} {exc}".splitlines()[0])
                        raise

                try:
                    check()
                except (Exception, FailureGroup):  # recorded above; hypothesis re-raises the shrunk one
                    pass
        assert not failures, "\n".join(sorted(set(failures)))
