"""Attack 9: shipped secrets and hardening. The k8s secrets file's placeholders were accepted by
the node (a token signed with the public placeholder joined any room as admin); compose ships a
fixed Redis password; passwords sit on command lines; look-alike and invisible usernames were
accepted; the page had no CSP, nosniff or Referrer-Policy; the metrics NetworkPolicy admitted any
namespace; compose's redis and prometheus lacked the containers' hardening.

Defended: no usable default secret ships and a node refuses to start with a published one;
usernames are NFKC-normalized and refused when invisible or mixed-script; the page is served with
the security headers by every shipped nginx; the manifests hold no such gaps."""

from __future__ import annotations

import os
import re
import sys
import uuid
from typing import Any

import pytest
import yaml

from tests.adversarial import shipped
from tests.adversarial.bursts import join
from tests.adversarial.devcluster_shim import ClusterError, ManagedProcess, free_port
from tests.adversarial.httpraw import http
from tests.adversarial.observe import published_documentation
from tests.adversarial.rawws import RawWebSocket

# A node given a refused secret must exit (non-zero) within this long, before listening.
REFUSE_WITHIN_S = 15.0


def placeholder_secrets() -> dict[str, str]:
    document = yaml.safe_load((shipped.K8S / "15-secrets.yaml").read_text())
    values: dict[str, str] = document.get("stringData") or {}
    return values


# Values this repository has published (k8s/15-secrets.yaml, docker-compose.yml): they stay
# public in its history forever, so a node must refuse them even after the files change.
PUBLISHED_BEFORE = {
    "published auth-secret placeholder": {
        "ROOMCAST_AUTH_SECRET": "replace-me-with-openssl-rand-hex-32-0123456789abcdef"
    },
    "published api-keys placeholder": {
        "ROOMCAST_API_KEYS": "replace-me-with-openssl-rand-hex-24-0123456789abcdef"
    },
    "published redis password placeholder": {
        "ROOMCAST_REDIS_URL": "redis://:replace-me-redis-password@127.0.0.1:6379/0"
    },
    "published compose redis password": {
        "ROOMCAST_REDIS_URL": "redis://:roomcast-dev-password@127.0.0.1:6379/0"
    },
}


def published_environments() -> dict[str, dict[str, str]]:
    """Environments built from every secret value the repository publishes, now or before."""
    secrets = placeholder_secrets()
    cases: dict[str, dict[str, str]] = dict(PUBLISHED_BEFORE)
    if "auth-secret" in secrets:
        cases["k8s auth-secret placeholder"] = {"ROOMCAST_AUTH_SECRET": secrets["auth-secret"]}
    if "api-keys" in secrets:
        cases["k8s api-keys placeholder"] = {"ROOMCAST_API_KEYS": secrets["api-keys"]}
    if "redis-url" in secrets:
        cases["k8s redis-url placeholder password"] = {"ROOMCAST_REDIS_URL": secrets["redis-url"]}
    compose_text = shipped.COMPOSE.read_text()
    for default in sorted(set(re.findall(r"ROOMCAST_REDIS_PASSWORD:-([^}]+)}", compose_text))):
        cases[f"compose default redis password {default!r}"] = {
            "ROOMCAST_REDIS_URL": f"redis://:{default}@127.0.0.1:6379/0"
        }
    return cases


CASES = published_environments()


@pytest.mark.parametrize("case", list(CASES))
def test_node_refuses_to_start_with_a_published_secret(case: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}
    env.update(
        ROOMCAST_HOST="127.0.0.1", ROOMCAST_PORT="0", ROOMCAST_METRICS_PORT=str(free_port()),
        ROOMCAST_NODE_ID="placeholder-probe", PYTHONUNBUFFERED="1",
    )  # fmt: skip
    env.update(CASES[case])
    process = ManagedProcess("placeholder-probe", [sys.executable, "-m", "roomcast"], env)
    try:
        started = process.wait_for_line(lambda line: '"event":"listening"' in line, REFUSE_WITHIN_S)
    except ClusterError:
        started = None  # it exited: what we want, if it said why
    code = process.stop(5) if started is not None else process.popen.wait(5)
    output = "\n".join(process.lines)
    figures = f"{case}: {'started' if started else f'exit {code}'}; {process.lines[-1:]}"
    print(figures)
    assert started is None and code not in (None, 0), figures
    name = next(iter(CASES[case]))
    assert name in output, f"the refusal must name {name}: {figures}"


def test_compose_ships_no_default_password_and_none_on_command_lines() -> None:
    text = shipped.COMPOSE.read_text()
    problems = []
    if ":-roomcast-dev-password" in text or "PASSWORD:-" in text:
        problems.append("a default Redis password (${…PASSWORD:-value})")
    services = shipped.compose()["services"]
    for name, service in services.items():
        command = " ".join(str(c) for c in service.get("command", []) or [])
        if "--requirepass" in command or "--masterauth" in command:
            problems.append(f"{name}: password on the redis-server command line")
        health = " ".join(str(c) for c in (service.get("healthcheck") or {}).get("test", []))
        if "redis-cli -a" in health:
            problems.append(f"{name}: password on the redis-cli command line")
    assert not problems, problems


def test_k8s_redis_password_is_not_on_a_command_line() -> None:
    problems = []
    for document in shipped.k8s_kind("Deployment") + shipped.k8s_kind("StatefulSet"):
        for container in shipped.containers(document):
            args = " ".join(
                str(a) for a in container.get("args", []) + container.get("command", [])
            )
            if "--requirepass" in args:
                problems.append(f"{container['name']}: --requirepass on the command line")
            for probe in ("readinessProbe", "livenessProbe"):
                command = " ".join((container.get(probe) or {}).get("exec", {}).get("command", []))
                if "redis-cli -a" in command:
                    problems.append(f"{container['name']}: redis-cli -a in its {probe}")
    assert not problems, problems


def test_readme_kubectl_apply_says_to_replace_the_secrets() -> None:
    readme = published_documentation() + (shipped.K8S / "README.md").read_text()
    applies = [i for i, line in enumerate(readme.splitlines()) if "kubectl apply" in line]
    assert applies, "no kubectl apply in the documentation"
    lines = readme.splitlines()
    for index in applies:
        context = "\n".join(lines[max(0, index - 15) : index + 1]).lower()
        assert "secret" in context, f"`{lines[index].strip()}` without a word on secrets before it"


# Usernames a person would read as someone else, or as nobody. Each must be refused.
DECEPTIVE_NAMES = {
    "hangul filler U+3164": "\u3164",
    "hangul filler around a name": "\u3164admin\u3164",
    "halfwidth hangul filler U+FFA0": "\uffa0",
    "cyrillic a in admin": "\u0430dmin",
    "cyrillic o in bob": "b\u043eb",
    "greek omicron in root": "r\u03bf\u03bft",
}
# Names that are someone's real name in one script: must stay accepted (no over-blocking).
HONEST_NAMES = ["админ", "Zoë", "José María", "李小龍", "o'brien"]


@pytest.mark.parametrize("case", list(DECEPTIVE_NAMES))
async def test_deceptive_username_is_refused(cluster: Any, case: str) -> None:
    name = DECEPTIVE_NAMES[case]
    room = f"names-{uuid.uuid4().hex[:6]}"
    ws = await RawWebSocket.connect("127.0.0.1", cluster.nginx_port)
    try:
        await ws.send({"type": "join", "room": room, "username": name, "id": "j"})
        answer = await ws.next_text(id="j")
    finally:
        await ws.close()
    api = await http(
        cluster.nginx_port, "POST", f"/api/rooms/{room}/messages",
        json_body={"text": "hi", "username": name},
    )  # fmt: skip
    got = f"{answer.get('type')} {answer.get('code', '')}"
    figures = f"{case} ({name!r}): join -> {got}; API post -> {api.status}"
    print(figures)
    assert answer["type"] == "error" and answer["code"] == "invalid_username", figures
    assert api.status == 400, figures


async def test_fullwidth_and_honest_names(cluster: Any) -> None:
    room = f"names-{uuid.uuid4().hex[:6]}"
    ws = await RawWebSocket.connect("127.0.0.1", cluster.nginx_port)
    try:
        for name in HONEST_NAMES:
            joined = await join(ws, room, name)
            assert joined["username"] == name, joined
            await ws.send({"type": "leave", "room": room})
            await ws.next_text(type="left", room=room)
            ws.received.texts.clear()
        # Fullwidth "admin" (U+FF41...) is "admin" after NFKC: it must be that name, or refused.
        fullwidth = "".join(chr(ord(c) + 0xFEE0) for c in "admin")
        await ws.send({"type": "join", "room": room, "username": fullwidth, "id": "fw"})
        answer = await ws.next_text(id="fw")
    finally:
        await ws.close()
    assert answer.get("username") == "admin" or answer.get("code") == "invalid_username", answer


SECURITY_HEADERS = ("Content-Security-Policy", "X-Content-Type-Options", "Referrer-Policy")


async def test_page_is_served_with_security_headers(cluster: Any) -> None:
    missing: dict[str, list[str]] = {}
    for target in ("/", "/index.html", "/app.js"):
        answer = await http(cluster.nginx_port, "GET", target)
        assert answer.status == 200, (target, answer.status)
        absent = [h for h in SECURITY_HEADERS if answer.header(h) is None]
        if answer.header("X-Content-Type-Options") not in (None, "nosniff"):
            absent.append("X-Content-Type-Options is not nosniff")
        csp = answer.header("Content-Security-Policy") or ""
        if csp and (
            "'unsafe-inline'" in csp.split("script-src")[-1].split(";")[0]
            or "default-src" not in csp
        ):
            absent.append(f"weak CSP {csp!r}")
        if absent:
            missing[target] = absent
    assert not missing, missing


@pytest.mark.parametrize("config", list(shipped.NGINX_CONFIGS))
def test_every_shipped_nginx_sends_the_security_headers(config: str) -> None:
    text = shipped.NGINX_CONFIGS[config].read_text()
    absent = [h for h in SECURITY_HEADERS if f"add_header {h}" not in text]
    assert not absent, f"{config}: no add_header for {absent}"


def test_page_never_puts_the_token_in_the_websocket_url() -> None:
    sources = [
        shipped.ROOT / "loadbalancer" / "static" / "app.js",
        shipped.K8S / "30-loadbalancer-config.yaml",
    ]
    offending = [str(p.relative_to(shipped.ROOT)) for p in sources if "?token=${" in p.read_text()]
    assert not offending, f"the page builds /chat?token=… (logged by proxies): {offending}"


def test_metrics_network_policy_names_the_monitoring_namespace() -> None:
    problems = []
    for policy in shipped.k8s_kind("NetworkPolicy"):
        for rule in policy.get("spec", {}).get("ingress", []) or []:
            for peer in rule.get("from", []) or []:
                selector = peer.get("namespaceSelector")
                if selector is not None and not (
                    selector.get("matchLabels") or selector.get("matchExpressions")
                ):
                    problems.append(
                        f"{policy['metadata']['name']}: a peer from ANY namespace {peer}"
                    )
    assert not problems, problems


# Every service, the cluster profile's too (its one-shots run with the Redis password).
@pytest.mark.parametrize("service", sorted(shipped.compose()["services"]))
def test_compose_service_is_hardened(service: str) -> None:
    spec = shipped.compose()["services"][service]
    problems = []
    if "ALL" not in (spec.get("cap_drop") or []):
        problems.append("no cap_drop: [ALL]")
    if spec.get("read_only") is not True:
        problems.append("not read_only")
    if not any("no-new-privileges" in str(o) for o in spec.get("security_opt") or []):
        problems.append("no no-new-privileges")
    assert not problems, f"compose {service}: {problems}"
