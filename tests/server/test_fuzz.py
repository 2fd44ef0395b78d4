"""Property-based fuzzing of the OpenAPI schema (schemathesis): no generated request gets a 500."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipfs_accelerate.server import Limits
from tests.server.conftest import make_app

schemathesis = pytest.importorskip("schemathesis")

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def fuzz_app(tiny_endpoints: dict[str, Any]) -> Any:
    return make_app(tiny_endpoints, api_key=None, limits=Limits(max_items=4, max_tokens=8))


def test_no_generated_request_gets_a_500(fuzz_app: Any) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    names = [
        *(m.name for m in fuzz_app.state.registry.all()), None]
    seen: dict[str, int] = {}
    statuses: dict[int, int] = {}
    for operation in operations:
        # Bounded: 25 examples per operation, derandomized so a failure reproduces.
        @given(case=operation.as_strategy(), name=st.sampled_from(names))
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def check(case: Any, name: str | None) -> None:
            # Most generated model names are unknown (404): aim most cases at served models.
            if name is not None:
                if isinstance(case.body, dict) and "model" in case.body:
                    case.body["model"] = name
                if case.path_parameters and "model_id" in case.path_parameters:
                    case.path_parameters["model_id"] = name
            label = f"{case.operation.method.upper()} {case.operation.path}"
            response = case.call()
            assert response.status_code < 500, f"{label}: {response.status_code} {response.text[:500]}"
            seen[label] = seen.get(label, 0) + 1
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code >= 400:
                body = response.json()
                assert set(body["error"]) == {"message", "type", "param", "code"}, body

        check()
    assert statuses.get(200, 0) > 0 and statuses.get(400, 0) > 0, statuses  # it reached the models
    assert set(seen) == {f"{op.method.upper()} {op.path}" for op in operations}
