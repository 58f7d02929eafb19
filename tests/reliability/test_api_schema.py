"""schemathesis against the served `/openapi.json`, with the admin token: generated valid and
invalid requests to every operation get no 500 and answers that match the published schema.

schemathesis' own pytest integration does not run under pytest 9 (it writes a node attribute
pytest no longer has), so each operation's strategy is driven by Hypothesis here."""

from __future__ import annotations

import traceback

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.served import Served

CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]


def fuzz_every_operation(served: Served, examples: int) -> None:
    """Run `examples` valid and `examples` invalid requests against each operation; fail with
    every operation that misbehaved, each with its smallest failing request."""
    schema = schemathesis.openapi.from_url(f"{served.base_url}/openapi.json")
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=examples,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def exercise(case: schemathesis.Case) -> None:
                response = case.call(headers=served.admin_headers, timeout=30)
                case.validate_response(response, checks=CHECKS, headers=served.admin_headers)

            try:
                exercise()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE, operation.label  # nothing to get wrong
            except (Exception, BaseExceptionGroup):  # report every operation's failure
                failures.append(f"{operation.label} ({mode}):\n{traceback.format_exc()[-3000:]}")
    assert operations >= 25, f"only {operations} operations in the schema"
    assert not failures, "\n\n".join(failures) + f"\n\nserver log:\n{served.output()[-5000:]}"


@pytest.mark.timeout(300)
def test_every_operation_answers_within_its_schema(served: Served) -> None:
    fuzz_every_operation(served, examples=10)


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_every_operation_answers_within_its_schema_long(served: Served) -> None:
    fuzz_every_operation(served, examples=200)
