"""Beyond the issue: every shipped Kubernetes workload runs as an attacker would least like it:
non-root, no privilege escalation, read-only root file system, every capability dropped, no
service-account token, memory limits (an unbounded container is another's OOM)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.adversarial import shipped

WORKLOADS = [
    d
    for d in shipped.k8s_documents()
    if d.get("kind") in ("Deployment", "StatefulSet", "DaemonSet")
]


def _problems(document: dict[str, Any]) -> list[str]:
    pod = document["spec"]["template"]["spec"]
    pod_context = pod.get("securityContext") or {}
    problems = []
    if pod.get("automountServiceAccountToken") is not False:
        problems.append("service-account token mounted")
    for container in shipped.containers(document):
        context = container.get("securityContext") or {}
        name = container["name"]
        if not (context.get("runAsNonRoot") or pod_context.get("runAsNonRoot")):
            problems.append(f"{name}: may run as root")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: privilege escalation allowed")
        if context.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: writable root file system")
        if "ALL" not in (context.get("capabilities") or {}).get("drop", []):
            problems.append(f"{name}: capabilities not dropped")
        if not (container.get("resources") or {}).get("limits", {}).get("memory"):
            problems.append(f"{name}: no memory limit")
    return problems


@pytest.mark.parametrize("name", [w["metadata"]["name"] for w in WORKLOADS])
def test_workload_is_hardened(name: str) -> None:
    document = next(w for w in WORKLOADS if w["metadata"]["name"] == name)
    problems = _problems(document)
    assert not problems, f"{name}: {problems}"
