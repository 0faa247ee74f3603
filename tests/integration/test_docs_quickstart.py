"""The quickstart's terminal and curl commands (docs/quickstart.md), run as written against a
real cluster (redis, 3 nodes, nginx): only the port and the virtualenv's path are adapted."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from roomcast_dev.devcluster import LocalCluster, timeout_factor

from tests.support.cluster import FAST_ENV

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "docs" / "quickstart.md"


def commands(section: str) -> list[str]:
    """The commands of the ```sh block under the heading that starts with ``section``."""
    text = QUICKSTART.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(section)}.*?^```sh\n(.*?)^```$", text, re.M | re.S)
    assert match is not None, f"no sh block under '## {section}' in {QUICKSTART}"
    joined = match.group(1).replace("\\\n", " ")
    return [line.split("  #", 1)[0].strip() for line in joined.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(3, node_env=FAST_ENV) as running:
        yield running


def run(
    cluster: LocalCluster, command: str, seconds: float = 20, typed: str | None = None
) -> subprocess.CompletedProcess[str]:
    adapted = command.replace("127.0.0.1:8080", f"127.0.0.1:{cluster.nginx_port}").replace(
        ".venv/bin/roomcast", f"{sys.executable} -m roomcast"
    )
    return subprocess.run(
        ["bash", "-c", adapted],
        input=typed if typed is not None else "",
        capture_output=True,
        text=True,
        timeout=seconds * timeout_factor(),
        check=False,
    )


def test_the_terminal_client_commands(cluster: LocalCluster) -> None:
    interactive, scripted = commands("3.")
    assert "--send" in scripted
    # From a pipe it sends each line; /quit ends it.
    result = run(cluster, interactive, typed="hello from the quickstart\n/quit\n")
    assert result.returncode == 0, result.stderr
    result = run(cluster, scripted)
    assert result.returncode == 0, result.stderr
    history = json.loads(run(cluster, commands("4.")[2]).stdout)
    texts = [m["text"] for m in history["messages"]]
    assert texts[-2:] == ["hello from the quickstart", "build green"], texts


def test_the_curl_commands(cluster: LocalCluster) -> None:
    follow, post, history, presence = commands("4.")
    assert follow.startswith("curl -N")
    # The stream never ends by itself: a few seconds of it, then curl's own timeout (28).
    streamed = run(cluster, follow.replace("curl -N", "curl -N --max-time 3"))
    assert streamed.returncode == 28, streamed.stderr
    first = json.loads(streamed.stdout.split("data:", 1)[1].splitlines()[0])
    assert first["type"] == "joined" and first["room"] == "general"

    posted = run(cluster, post)
    assert posted.returncode == 0, posted.stderr
    answer = json.loads(posted.stdout)
    assert answer["room"] == "general" and answer["offset"] >= 1

    kept = json.loads(run(cluster, history).stdout)
    assert kept["messages"][-1]["text"] == "deployed v42"
    assert kept["messages"][-1]["offset"] == answer["offset"]
    members = json.loads(run(cluster, presence).stdout)
    assert members["type"] == "presence" and members["room"] == "general"
