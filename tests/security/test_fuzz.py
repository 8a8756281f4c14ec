"""Schemathesis against the gateway's OpenAPI document, with a bounded number of examples per
operation: no answer may be a 5xx, and every answer must be documented (status, content type,
body schema). Runs in CI; derandomized, so a failure reproduces."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from security_helpers import bearer

pytestmark = [pytest.mark.serve, pytest.mark.slow]
MAX_EXAMPLES = 12  # per operation: ~1-2 minutes on two busy cores
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def operations(secure_app: Any) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{secure_app.base_url}/openapi.json")
    schema.config.update(base_url=secure_app.base_url)
    # Rollout commands change the deployment's live traffic split: their own tests cover them.
    schema = schema.exclude(path_regex=r"^/v1/admin/rollouts", method="POST")
    return [result.ok() for result in schema.get_all_operations()]


def test_api_fuzz(secure_app: Any, admin_key: str) -> None:
    """Every operation, MAX_EXAMPLES generated cases each (the plain hypothesis loop, so one
    failing operation names itself)."""
    ops = operations(secure_app)
    assert len(ops) >= 15
    statuses: Counter[int] = Counter()
    for operation in ops:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def fuzz(case: Any) -> None:
            response = case.call_and_validate(headers=bearer(admin_key), checks=CHECKS, timeout=120)
            statuses[response.status_code] += 1

        try:
            fuzz()
        except Exception as exc:
            raise AssertionError(f"{operation.method.upper()} {operation.path}: {exc}") from exc
    print(f"fuzzed {len(ops)} operations, {sum(statuses.values())} calls, statuses {sorted(statuses.items())}")
    assert statuses[200] and statuses[400], statuses  # it reached handlers, valid and invalid input
