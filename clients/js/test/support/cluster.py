"""Start a real roomcast cluster for the JavaScript tests and hold it until stdin closes.

The same LocalCluster the Python tests use (redis-server, N nodes, nginx on free loopback
ports). argv[1] is a JSON object: {"nodes": 3, "env": {...}, "tokens": [{"sub": S, "name": N,
"rooms": [...]}], "sentinel": false} ("sentinel": the nodes on a Sentinel-watched primary with
one replica and three sentinels, as tests/support/failovers.py starts them). Prints one JSON
line (URLs, node ids, ports and PIDs, issued tokens), then reads commands from stdin, one per
line, answering each with a JSON line:
  {"start_node": {"ROOMCAST_PORT": "..."}}   start another node (e.g. on a killed one's port)
  {"restart_redis": true}                     SIGKILL redis-server, start it again empty ({})
  {"fail_over": true}                         SIGKILL the Sentinel primary, wait for a new one
End of input stops everything it started.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[4]
sys.path[:0] = [str(ROOT / "node"), str(ROOT)]
# The nodes are `python -m roomcast` subprocesses: they must import this checkout too.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT / "node"), *filter(None, [os.environ.get("PYTHONPATH")])]
)

from roomcast_dev.devcluster import LocalCluster, NodeProcess  # noqa: E402
from roomcast_dev.redis_topologies import SentinelTopology, wait_until  # noqa: E402

from roomcast.core.auth import issue_token  # noqa: E402
from tests.support.cluster import FAST_ENV, ready  # noqa: E402


def describe(node: NodeProcess) -> dict[str, Any]:
    return {"id": node.node_id, "pid": node.process.pid, "port": node.port, "url": node.url}


def main() -> int:
    spec = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    env = {**FAST_ENV, **spec.get("env", {})}
    with ExitStack() as stack:
        sentinel = None
        if spec.get("sentinel"):
            sentinel = stack.enter_context(SentinelTopology(replicas=1, sentinels=3))
            env.update(sentinel.node_env())
        cluster = stack.enter_context(
            LocalCluster(int(spec.get("nodes", 3)), redis=sentinel is None, node_env=env)
        )
        for node in cluster.nodes:
            wait_until(partial(ready, node), 20, f"{node.node_id} ready")
        serve(cluster, sentinel, env, spec)
    return 0


def serve(
    cluster: LocalCluster, sentinel: SentinelTopology | None, env: dict[str, str], spec: Any
) -> None:
    """Print the cluster's description, then answer the commands read from stdin until its end."""
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
        elif command.get("restart_redis"):
            # No persistence: the restarted server holds nothing (a crashed pod).
            cluster.kill_redis()
            cluster.start_redis()
            print(json.dumps({}), flush=True)
        elif command.get("fail_over") and sentinel is not None:
            old_primary = sentinel.primary()
            old_primary.kill()
            new_primary = sentinel.wait_for_failover(old_primary.port)
            print(json.dumps({"old": old_primary.port, "new": new_primary.port}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
