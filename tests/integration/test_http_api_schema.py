"""The OpenAPI document against the running node: schemathesis generates valid and invalid
requests for every operation (except the endless event stream) and checks each answer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, TypeVar

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from roomcast_dev.devcluster import LocalCluster
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.core.result import Err, Result

from roomcast.wire.usernames import UsernameError, normalize_username
from tests.support.cluster import FAST_ENV, http_get

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


# What counts as refusing invalid data: schemathesis' own list, plus the size limits a request
# can run into (a generated query once made the target longer than 2048 bytes: 414).
REJECTIONS = [
    "400", "401", "403", "404", "405", "406", "409", "413", "414", "415", "422", "428", "429",
    "431", "5xx",
]  # fmt: skip


@pytest.fixture(scope="module")
def api_schema(api_node: LocalCluster) -> schemathesis.BaseSchema:
    node = api_node.nodes[0]
    config = SchemathesisConfig.from_dict(
        {"checks": {"negative_data_rejection": {"expected-statuses": REJECTIONS}}}
    )
    return schemathesis.openapi.from_url(
        f"http://127.0.0.1:{node.port}/api/openapi.json", config=config
    )


# Not streamEvents: it never ends by itself (tests/integration/test_http_api.py covers it);
# schemathesis leaves out the document's own path (test_http_api.py fetches it).
OPERATIONS = [
    "postMessage",
    "getPresence",
    "getHistory",
    # The server API (the node here is open, as in development: no API key needed).
    "disconnectUser",
    "removeMember",
    "banMember",
    "unbanMember",
    "listBans",
    "deleteMessage",
    "clearHistory",
    "broadcast",
    "listRooms",
    "clusterInfo",
]
WITHOUT_INPUT = {"clusterInfo"}  # nothing to make invalid: no negative case exists
CASES = [
    (operation_id, mode)
    for operation_id in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if not (mode is GenerationMode.NEGATIVE and operation_id in WITHOUT_INPUT)
]


@pytest.mark.parametrize(("operation_id", "mode"), CASES)
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
    strategy = operation.as_strategy(generation_mode=mode)
    if mode is GenerationMode.NEGATIVE:
        strategy = strategy.filter(_not_a_name_the_rule_accepts)

    @given(case=strategy)
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case: schemathesis.Case[Any]) -> None:
        nonlocal calls
        calls += 1
        case.call_and_validate()

    check()
    assert calls > 0


def _not_a_name_the_rule_accepts(case: schemathesis.Case[Any]) -> bool:
    """Leaves out a "negative" body whose username only breaks the pattern as JSON Schema reads
    it (\\w as ASCII: "²", "José"): the server takes letters of any script, as the document's
    description says, so such a name is not invalid data."""
    body = case.body
    name = body.get("username") if isinstance(body, dict) else None
    if not isinstance(name, str) or name.isascii():
        return True
    try:
        normalize_username(name)
    except UsernameError:
        return True
    return False


def test_size_limits_are_documented_for_every_operation_and_answered_so(
    api_node: LocalCluster,
) -> None:
    """A request target over 2048 bytes gets the documented 414 with the Error body (a generated
    query once reached it, and schemathesis rightly flagged the status as undocumented)."""
    node = api_node.nodes[0]
    status, body = http_get(f"http://127.0.0.1:{node.port}/api/openapi.json")
    assert status == 200
    document = json.loads(body)
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            assert {"414", "431"} <= set(operation["responses"]), (path, method)
    status, body = http_get(
        f"http://127.0.0.1:{node.port}/api/rooms/r/history?limit=1&pad={'x' * 3000}"
    )
    assert status == 414
    assert json.loads(body) == {"code": "invalid_request", "reason": "request target too long"}
