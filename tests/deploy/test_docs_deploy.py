"""What the pages say of the deployment files must be what they hold: the objects
`kubectl apply -f k8s/` prints, the Secrets named, the nginx directives quoted."""

from __future__ import annotations

import re

import yaml

from tests.support.docs import DOCS, PAGES, section
from tests.support.paths import REPO as ROOT

# Kubernetes -----------------------------------------------------------------------------------

KIND_PLURAL = {
    "Namespace": "namespace",
    "Deployment": "deployment.apps",
    "Service": "service",
    "Secret": "secret",
    "ConfigMap": "configmap",
    "NetworkPolicy": "networkpolicy.networking.k8s.io",
    "PodDisruptionBudget": "poddisruptionbudget.policy",
    "HorizontalPodAutoscaler": "horizontalpodautoscaler.autoscaling",
}


def test_the_printed_kubectl_apply_lists_every_object_of_k8s_in_order() -> None:
    expected = [
        f"{KIND_PLURAL[item['kind']]}/{item['metadata']['name']} created"
        for manifest in sorted((ROOT / "k8s").glob("*.yaml"))
        for item in yaml.safe_load_all(manifest.read_text(encoding="utf-8"))
        if item
    ]
    text = section(DOCS / "operations.md", "Kubernetes")
    printed = re.search(r"kubectl apply -f k8s/.*?```text\n(.*?)```", text, re.S)
    assert printed is not None
    assert printed.group(1).splitlines() == expected


def test_every_secret_the_pages_name_is_shipped() -> None:
    shipped = {
        item["metadata"]["name"]
        for manifest in (ROOT / "k8s").glob("*.yaml")
        for item in yaml.safe_load_all(manifest.read_text(encoding="utf-8"))
        if item and item["kind"] == "Secret"
    }
    named = set()
    for page in [*PAGES, ROOT / "k8s" / "README.md"]:
        text = page.read_text(encoding="utf-8")
        named |= set(re.findall(r"[Ss]ecret `([\w-]+)`|`([\w-]+)` Secret", text))
    assert {name for pair in named for name in pair if name} <= shipped


# nginx ----------------------------------------------------------------------------------------

NGINX_CONFIGS = (
    ROOT / "loadbalancer" / "nginx.conf.template",
    ROOT / "loadbalancer/docker/nginx.conf",
)


def nginx_statements() -> dict[str, list[set[str]]]:
    """Each directive of the shipped nginx configurations, with the arguments of each use."""
    found: dict[str, list[set[str]]] = {}
    for config in NGINX_CONFIGS:
        for directive, arguments in re.findall(
            r"^\s*([a-z_]+)\s+([^;{#\n]*);", config.read_text(encoding="utf-8"), re.M
        ):
            found.setdefault(directive, []).append(set(arguments.split()))
    return found


def test_every_nginx_directive_the_pages_quote_is_shipped_so() -> None:
    shipped = nginx_statements()
    directive = "|".join(sorted(shipped))
    wrong = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        # `proxy_connect_timeout 1s`, `lingering_close always; lingering_time 2s`
        for quoted in re.findall(rf"`((?:{directive}) [^`]+)`", text):
            for statement in filter(None, (part.strip() for part in quoted.split(";"))):
                name, *arguments = statement.split()
                wanted = set(arguments) - {"…"}
                if not any(wanted <= used for used in shipped.get(name, [])):
                    wrong.append(f"{page.relative_to(ROOT)}: `{statement}`")
        # the 2 s `proxy_connect_timeout`
        for seconds, name in re.findall(rf"(\d+) s `({directive})`", text):
            if not any(f"{seconds}s" in used for used in shipped[name]):
                wrong.append(f"{page.relative_to(ROOT)}: {seconds} s `{name}`")
    assert wrong == []
