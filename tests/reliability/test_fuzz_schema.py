"""Schema fuzzing: schemathesis generates requests from the app's own OpenAPI and calls the app in
process (ASGI, no network). Every endpoint, schema-valid (positive) and schema-violating (negative)
data, two configurations:

* `open`:  the defaults (no API key, unknown question ids rejected);
* `keyed`: KT_API_KEY set and KT_UNKNOWN_QUESTIONS=map (so generated ids reach the model).

Checks on every response: no 5xx, the status code is declared, the content type and the body match
the declared schema, declared headers conform, and schema-violating data is rejected with a 4xx.
On top: schema-valid data may only be refused for the documented semantic reasons (unknown ids,
candidates at different moments, a reload of a directory that is not an artifact) — never by the
validator, which would mean schema and validation disagree.

Case count: `KT_FUZZ_EXAMPLES` per operation and mode (default 45 -> ~1,250 cases in all);
derandomized, so CI is reproducible; set `KT_FUZZ_RANDOM=1` to explore new cases.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from schemathesis import GenerationMode
from schemathesis import checks as st_checks

from service.app import create_app
from service.config import Settings

logger = logging.getLogger(__name__)
EXAMPLES = int(os.environ.get("KT_FUZZ_EXAMPLES", "45"))
DERANDOMIZE = os.environ.get("KT_FUZZ_RANDOM", "") != "1"
MIN_TOTAL_CASES = 1000
API_KEY = "fuzz-key-0123456789"

OPERATIONS = [
    "GET /api",
    "GET /healthz",
    "GET /readyz",
    "POST /predict",
    "POST /predict/batch",
    "POST /recommend",
    "POST /interactions",
    "GET /users",
    "GET /users/{user_id}/history",
    "GET /users/{user_id}/mastery",
    "GET /users/{user_id}/mastery/timeline",
    "DELETE /users/{user_id}",
    "GET /questions",
    "GET /questions/{question_id}",
    "PUT /questions/{question_id}",
    "GET /model",
    "POST /admin/reload",
    "GET /metrics",
]
# Ids are drawn from 0..2^53: the 60 questions of the test bank are never hit, so this one's schema-
# valid cases are 404s (a question neither trained on nor registered).
REACHED_BY_404 = {"GET /questions/{question_id}"}
CONFIGS: dict[str, dict[str, Any]] = {
    "open": {},
    "keyed": {"api_key": API_KEY, "unknown_questions": "map"},
}
CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
    st_checks.response_headers_conformance,
    st_checks.negative_data_rejection,
]
# Error types the service itself raises for schema-valid requests (documented in docs/service.md).
SEMANTIC_REJECTIONS = {"unknown_question", "value_error", "reload_failed", "limit_exceeded"}

CASES: Counter[tuple[str, str, str]] = Counter()
STATUSES: Counter[tuple[str, str, int]] = Counter()


@pytest.fixture(scope="module")
def schemas(artifact: Path) -> Iterator[dict[str, Any]]:
    """One app per configuration (embedded store), loaded by schemathesis from /openapi.json."""
    out = {}
    for name, overrides in CONFIGS.items():
        app = create_app(Settings(model_dir=artifact, **overrides))
        out[name] = schemathesis.openapi.from_asgi("/openapi.json", app)
    yield out
    from schemathesis.python import asgi

    asgi.shutdown_lifespans()  # stop the apps' lifespans (executors, stores)


def _operation(schema: Any, label: str) -> Any:
    for result in schema.get_all_operations():
        op = result.ok()
        if op.label == label:
            return op
    raise AssertionError(f"{label} is not in the OpenAPI document")


def test_openapi_lists_exactly_the_fuzzed_operations(schemas: dict[str, Any]) -> None:
    for schema in schemas.values():
        labels = sorted(r.ok().label for r in schema.get_all_operations())
        assert labels == sorted(OPERATIONS), "a new endpoint must be added to OPERATIONS"


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("label", OPERATIONS)
def test_fuzz_operation(
    schemas: dict[str, Any], config: str, mode: GenerationMode, label: str
) -> None:
    op = _operation(schemas[config], label)
    headers = {"Authorization": f"Bearer {API_KEY}"} if config == "keyed" else None
    key = (config, mode.value, label)

    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=DERANDOMIZE,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate, hypothesis.Phase.shrink],
    )
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        sent = headers
        dropped = not any(k.lower() == "authorization" for k in case.headers or {})
        if mode is GenerationMode.NEGATIVE and dropped:
            # the mutation removed the required header: adding our key back would undo it and
            # turn the case into a valid request (a false "schema-violating request accepted")
            sent = None
        response = case.call(headers=sent)
        CASES[key] += 1
        STATUSES[(config, label, response.status_code)] += 1
        case.validate_response(response, checks=CHECKS, headers=sent)
        if mode is GenerationMode.POSITIVE and response.status_code == 422:
            kinds = {item["type"] for item in response.json()["detail"]}
            assert kinds <= SEMANTIC_REJECTIONS, f"schema-valid request refused: {response.text}"

    try:
        run()
    except hypothesis.errors.Unsatisfiable:
        # nothing to negate: the operation has no parameters, body or required header here
        assert mode is GenerationMode.NEGATIVE
        pytest.skip(f"{label} has no input to make schema-invalid in the {config} config")


def test_fuzzing_volume_and_reach() -> None:
    """>= 1,000 generated cases, every endpoint called, and the happy path really reached."""
    ran = {k[0:2] + (k[2],) for k in CASES}
    if len({(c, m) for c, m, _ in ran}) < 4 or len({k[2] for k in ran}) < len(OPERATIONS):
        pytest.skip("run the whole module to count cases")
    total = sum(CASES.values())
    logger.info("schema fuzzing: %d generated cases, statuses %s", total, dict(STATUSES))
    assert total >= MIN_TOTAL_CASES, f"only {total} generated cases"
    for label in OPERATIONS:
        if label in REACHED_BY_404:  # the happy path is tested in tests/service/test_api.py
            assert STATUSES[("keyed", label, 404)] > 0, f"{label} never answered 404 under fuzzing"
            continue
        assert STATUSES[("keyed", label, 200)] > 0, f"{label} never answered 200 under fuzzing"
    assert STATUSES[("keyed", "GET /model", 401)] > 0  # negative auth cases really sent
