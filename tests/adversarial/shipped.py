"""The shipped deployment files, parsed: compose services, k8s documents, nginx configurations."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.adversarial.devcluster_shim import REPO_ROOT

ROOT: Path = REPO_ROOT
COMPOSE = ROOT / "docker-compose.yml"
K8S = ROOT / "k8s"
NGINX_CONFIGS = {
    "make run template": ROOT / "loadbalancer" / "nginx.conf.template",
    "compose": ROOT / "loadbalancer" / "docker" / "nginx.conf",
    "k8s": K8S / "30-loadbalancer-config.yaml",
}


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def k8s_documents() -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        documents += [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    return documents


def k8s_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in k8s_documents() if d.get("kind") == kind]


def k8s_config_texts() -> str:
    """Every ConfigMap value and container argument in k8s/ (where a setting may live)."""
    parts: list[str] = []
    for document in k8s_documents():
        if document.get("kind") == "ConfigMap":
            parts += [str(v) for v in (document.get("data") or {}).values()]
        for container in containers(document):
            parts += [str(a) for a in container.get("args", []) + container.get("command", [])]
    return "\n".join(parts)


def containers(document: dict[str, Any]) -> list[dict[str, Any]]:
    spec = document.get("spec", {}).get("template", {}).get("spec", {})
    found: list[dict[str, Any]] = spec.get("containers", []) + spec.get("initContainers", [])
    return found


def memory_bytes(quantity: str) -> int:
    """``256Mi``, ``200mb``, ``1gb``, plain bytes: Kubernetes and Redis notations."""
    match = re.fullmatch(r"(\d+)\s*([a-zA-Z]*)", quantity.strip())
    assert match is not None, quantity
    number, unit = int(match.group(1)), match.group(2).lower()
    scale = {
        "": 1, "b": 1, "k": 1000, "kb": 1024, "ki": 1024, "m": 1000**2, "mb": 1024**2,
        "mi": 1024**2, "g": 1000**3, "gb": 1024**3, "gi": 1024**3,
    }  # fmt: skip
    return number * scale[unit]


def redis_setting(text: str, name: str) -> str | None:
    """``--name value`` (a command line) or ``name value`` (a redis.conf line) in ``text``."""
    match = re.search(rf"(?:^|--|\s){re.escape(name)}[\s\n]+[\"']?([\w.-]+)", text, re.MULTILINE)
    return match.group(1) if match else None
