"""The OpenAPI document against the running node: schemathesis generates valid and invalid
requests for every operation (except the endless event stream) and checks each answer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.core.result import Err, Result

from roomcast.devcluster import LocalCluster
from tests.integration.conftest import FAST_ENV

pytestmark = pytest.mark.integration

T = TypeVar("T")
E = TypeVar("E", bound=Exception)


def unwrap(result: Result[T, E]) -> T:
    """The value of an ``Ok``; an ``Err`` (an operation schemathesis cannot read) is raised."""
    if isinstance(result, Err):
        raise result.err()
    return result.ok()


@pytest.fixture(scope="module")
def api_node() -> Iterator[LocalCluster]:
    env = {**FAST_ENV, "ROOMCAST_API_RATE_PER_SECOND": "5000", "ROOMCAST_API_RATE_BURST": "5000"}
    with LocalCluster(1, nginx=False, node_env=env) as running:
        yield running


@pytest.fixture(scope="module")
def api_schema(api_node: LocalCluster) -> schemathesis.BaseSchema:
    node = api_node.nodes[0]
    schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{node.port}/api/openapi.json")

    return schema


# Not streamEvents: it never ends by itself (tests/integration/test_http_api.py covers it);
# schemathesis leaves out the document's own path (test_http_api.py fetches it).
OPERATIONS = ["postMessage", "getPresence", "getHistory"]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("operation_id", OPERATIONS)
def test_every_answer_matches_the_document(
    api_schema: schemathesis.BaseSchema, operation_id: str, mode: GenerationMode
) -> None:
    """Valid requests get documented successes; invalid ones documented 4xx errors; every body
    matches its schema and content type, and nothing is a 5xx."""
    (operation,) = [
        found
        for found in map(unwrap, api_schema.get_all_operations())
        if found.definition.raw.get("operationId") == operation_id
    ]
    calls = 0

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case: schemathesis.Case[Any]) -> None:
        nonlocal calls
        calls += 1
        case.call_and_validate()

    check()
    assert calls > 0
