"""The server API's curl commands (docs/http-api.md, "Server API"), run as written against a real
cluster (redis, 3 nodes, nginx, an API key): only the port is adapted. Each answer must have the
status and the fields the page's table gives its request."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from roomcast_dev.devcluster import LocalCluster, timeout_factor

from tests.support.docs import DOCS, section
from tests.support.serverapi import API_ENV, API_KEY, all_ready

PAGE = DOCS / "http-api.md"
# "| `DELETE /api/rooms/{room}/bans/{user}` | | **204** (also …" and the like.
ROW = re.compile(r"^\| `(GET|POST|PUT|DELETE) (/api/[^`?]+)[^`]*` \|[^|]*\| \*\*(\d{3})\*\*(.*)$")
# How far the commands are told to go: the page deletes message 17 of `general`.
MESSAGES = 17


@dataclass(frozen=True)
class Row:
    method: str
    path: re.Pattern[str]
    status: int
    fields: frozenset[str]  # the answer's top-level fields, as the table writes them


def top_level_fields(answer: str) -> frozenset[str]:
    """The names of ``{"a","b":[{"c"}]}``'s own fields: a and b, not c."""
    match = re.match(r"\s*`(\{.*?\})`", answer)
    if match is None:
        return frozenset()
    text = match.group(1)[1:-1]
    while (shorter := re.sub(r"\[[^\[\]]*\]|\{[^{}]*\}", "", text)) != text:
        text = shorter
    return frozenset(re.findall(r'"([a-z_]+)"', text))


def rows() -> list[Row]:
    table = section(PAGE, "Server API")
    found = []
    for line in table.splitlines():
        match = ROW.match(line)
        if match is not None:
            method, path, status, answer = match.groups()
            pattern = re.compile(re.sub(r"\\\{[a-z]+\\\}", "[^/]+", re.escape(path)) + "$")
            found.append(Row(method, pattern, int(status), top_level_fields(answer)))
    return found


def commands() -> tuple[str, list[str]]:
    """The sh block's first line (the variables) and each command after it."""
    block = re.search(r"^```sh\n(.*?)^```$", section(PAGE, "Server API"), re.M | re.S)
    assert block is not None, f"no sh block under '## Server API' in {PAGE}"
    lines = [
        line.split("  #", 1)[0].strip()
        for line in block.group(1).replace("\\\n", " ").splitlines()
        if line.strip()
    ]
    commands = [part.strip() for line in lines[1:] for part in line.split("; ")]
    return lines[0], commands


def method_and_path(command: str) -> tuple[str, str]:
    named = re.search(r"-X (\w+)", command)
    url = re.search(r'"\$API(/[^"?]*)', command)
    assert url is not None, command
    method = named.group(1) if named else ("POST" if " -d " in command else "GET")
    return method, "/api" + url.group(1)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(3, node_env=API_ENV) as running:
        yield all_ready(running)


def run(cluster: LocalCluster, variables: str, command: str) -> tuple[int, str]:
    """The command as written, with curl told to be quiet and to say the status last."""
    adapted = variables.replace("127.0.0.1:8080", f"127.0.0.1:{cluster.nginx_port}")
    told = command.replace("curl ", "curl -s -w '\\n%{http_code}' ", 1)
    result = subprocess.run(
        ["bash", "-c", f"{adapted}\n{told}"],
        env={"PATH": "/usr/bin:/bin", "API_KEY": API_KEY},
        capture_output=True,
        text=True,
        timeout=20 * timeout_factor(),
        check=False,
    )
    assert result.returncode == 0, (command, result.stderr)
    body, _, status = result.stdout.rpartition("\n")
    return int(status), body


def test_the_server_api_commands_answer_what_the_table_says(cluster: LocalCluster) -> None:
    table = rows()
    assert len(table) == 10, table  # every request of the server API has its row
    variables, written = commands()
    # The page deletes message 17: the room has that many.
    post = (
        'curl -X POST "$API/rooms/general/messages" -H "$KEY" '
        """-H 'Content-Type: application/json' -d '{"text":"m","username":"ops"}'"""
    )
    for _ in range(MESSAGES):
        assert run(cluster, variables, post)[0] == 201
    answered: set[str] = set()
    for command in written:
        method, path = method_and_path(command)
        row = next((r for r in table if r.method == method and r.path.match(path)), None)
        assert row is not None, f"no row of the table for {method} {path}"
        status, body = run(cluster, variables, command)
        assert status == row.status, (command, body)
        if row.fields:
            assert set(json.loads(body)) == row.fields, (command, body)
        answered.add(f"{row.method} {row.path.pattern}")
    assert len(answered) == len(table)  # every row has its command
