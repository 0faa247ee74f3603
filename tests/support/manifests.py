"""Reading k8s/: the files `kubectl apply -f k8s/` reads, their objects, and small lookups."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.paths import REPO

K8S_DIR = REPO / "k8s"
NAMESPACE = "roomcast"
# The Kubernetes version the manifests are validated against (schemas shipped by the
# kubernetes-validate package), and the oldest one they must still suit.
KUBERNETES_VERSION = "1.32.0"
OLDEST_KUBERNETES_VERSION = "1.29.0"
# What `kubectl apply -f DIR` reads: files with these extensions, not recursive.
APPLY_EXTENSIONS = (".yaml", ".yml", ".json")

Obj = dict[str, Any]


@dataclass(frozen=True)
class Manifest:
    path: Path
    index: int
    obj: Obj

    @property
    def kind(self) -> str:
        return str(self.obj["kind"])

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def ident(self) -> str:
        return f"{self.path.name}:{self.kind}/{self.name}"


def apply_files() -> list[Path]:
    return sorted(p for p in K8S_DIR.iterdir() if p.is_file() and p.suffix in APPLY_EXTENSIONS)


def optional_files() -> list[Path]:
    return sorted((K8S_DIR / "optional").glob("*.yaml"))


def load(paths: list[Path]) -> list[Manifest]:
    result = []
    for path in paths:
        for index, obj in enumerate(doc for doc in yaml.safe_load_all(path.read_text()) if doc):
            result.append(Manifest(path, index, obj))
    return result


def manifests() -> list[Manifest]:
    return load(apply_files())


def objects(kind: str) -> list[Obj]:
    return [m.obj for m in manifests() if m.kind == kind]


def get(kind: str, name: str) -> Obj:
    for obj in objects(kind):
        if obj["metadata"]["name"] == name:
            return obj
    raise AssertionError(f"no {kind}/{name} in k8s/")


def pod_templates() -> Iterator[tuple[str, Obj]]:
    """(workload name, pod template) of every Deployment/StatefulSet/DaemonSet."""
    for m in manifests():
        if m.kind in ("Deployment", "StatefulSet", "DaemonSet"):
            yield m.name, m.obj["spec"]["template"]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def pods_selected(selector: Obj) -> list[tuple[str, Obj]]:
    """Pod templates matched by a label selector ({matchLabels} or a plain Service map)."""
    if "matchExpressions" in selector:
        raise AssertionError("matchExpressions are not used here; extend the test if needed")
    match = selector.get("matchLabels", selector) if selector else {}
    return [
        (name, tpl)
        for name, tpl in pod_templates()
        if selects(match, tpl["metadata"].get("labels", {}))
    ]


def container_ports(template: Obj) -> dict[str, int]:
    ports: dict[str, int] = {}
    for container in template["spec"]["containers"]:
        for port in container.get("ports", []):
            if "name" in port:
                ports[port["name"]] = int(port["containerPort"])
    return ports


def container_port_numbers(template: Obj) -> set[int]:
    return {
        int(port["containerPort"])
        for container in template["spec"]["containers"]
        for port in container.get("ports", [])
    }


def node_container() -> Obj:
    deployment = get("Deployment", "roomcast-node")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["node"], containers
    return dict(containers[0])
