"""Start a real roomcast cluster for the JavaScript tests and hold it until stdin closes.

The same LocalCluster the Python tests use (redis-server, N nodes, nginx on free loopback
ports). argv[1] is a JSON object: {"nodes": 3, "env": {...}, "tokens": [{"sub": S, "name": N,
"rooms": [...]}]}. Prints one JSON line (URLs, node ids, ports and PIDs, issued tokens), then
reads commands from stdin, one per line, answering each with a JSON line:
  {"start_node": {"ROOMCAST_PORT": "..."}}   start another node (e.g. on a killed one's port)
End of input stops everything it started.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[4]
sys.path[:0] = [str(ROOT / "node"), str(ROOT)]
# The nodes are `python -m roomcast` subprocesses: they must import this checkout too.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT / "node"), *filter(None, [os.environ.get("PYTHONPATH")])]
)

from roomcast_dev.devcluster import LocalCluster, NodeProcess  # noqa: E402

from roomcast.core.auth import issue_token  # noqa: E402
from tests.support.cluster import FAST_ENV  # noqa: E402


def describe(node: NodeProcess) -> dict[str, Any]:
    return {"id": node.node_id, "pid": node.process.pid, "port": node.port, "url": node.url}


def main() -> int:
    spec = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    env = {**FAST_ENV, **spec.get("env", {})}
    with LocalCluster(int(spec.get("nodes", 3)), node_env=env) as cluster:
        secret = env.get("ROOMCAST_AUTH_SECRET")
        tokens = [
            issue_token(secret, t["sub"], name=t.get("name"), rooms=t.get("rooms"))
            for t in spec.get("tokens", [])
            if secret
        ]
        info = {
            "url": cluster.url,
            "httpUrl": cluster.http_url,
            "nodes": [describe(node) for node in cluster.nodes],
            "tokens": tokens,
        }
        print(json.dumps(info), flush=True)
        for line in sys.stdin:
            command = json.loads(line)
            if "start_node" in command:
                node = cluster.start_node(command["start_node"])
                print(json.dumps(describe(node)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
