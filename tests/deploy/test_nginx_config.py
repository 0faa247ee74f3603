"""The three nginx configurations must not drift apart in what matters to clients.

loadbalancer/nginx.conf.template (local runs, `make run`, integration tests),
loadbalancer/docker/nginx.conf (compose) and the nginx.conf in k8s/30-loadbalancer-config.yaml
(generated from the compose one) must carry the same /chat proxy directives (Upgrade and
Connection headers, timeouts, next upstream, buffering), the same Upgrade map and the same
/healthz location. Only how the nodes are found may differ (upstream block vs resolver)."""

from __future__ import annotations

import ipaddress
import random
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="pyyaml is needed: add it to the dev dependencies")

from roomcast_dev.devcluster import ManagedProcess, free_port, render_nginx_config  # noqa: E402

from roomcast.net.http_public import _STREAM_HEADERS  # noqa: E402
from tests.support.paths import REPO  # noqa: E402
from tests.support.wsclient import scaled  # noqa: E402

TEMPLATE = REPO / "loadbalancer" / "nginx.conf.template"
DOCKER = REPO / "loadbalancer" / "docker" / "nginx.conf"
K8S_CONFIGMAP = REPO / "k8s" / "30-loadbalancer-config.yaml"
SYNC_SCRIPT = REPO / "loadbalancer" / "docker" / "sync_k8s.py"

# How a configuration reaches the nodes: allowed to differ between the three.
ROUTING = {"proxy_pass", "set"}


@dataclass
class Block:
    name: str
    args: tuple[str, ...]
    directives: list[tuple[str, ...]] = field(default_factory=list)
    children: list[Block] = field(default_factory=list)

    def find(self, name: str, *args: str) -> Block:
        for child in self.children:
            if child.name == name and child.args[: len(args)] == args:
                return child
            try:
                return child.find(name, *args)
            except LookupError:
                continue
        raise LookupError(f"no {name} {' '.join(args)} block")

    def values(self, name: str) -> list[tuple[str, ...]]:
        return [d[1:] for d in self.directives if d[0] == name]


_TOKEN = re.compile(
    r"""\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|([{};])|([^\s{};"'#]+))"""
)


def parse(text: str) -> Block:
    """A small nginx configuration parser: directives and blocks, comments dropped."""
    root = Block("main", ())
    stack = [root]
    words: list[str] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        assert match, f"cannot parse near {text[position : position + 40]!r}"
        position = match.end()
        comment, quoted, punct, word = match.groups()
        if comment:
            continue
        if quoted is not None or word:
            words.append(quoted if quoted is not None else word)
        elif punct == ";":
            stack[-1].directives.append(tuple(words))
            words = []
        elif punct == "{":
            block = Block(words[0], tuple(words[1:]))
            stack[-1].children.append(block)
            stack.append(block)
            words = []
        elif punct == "}":
            assert not words, words
            stack.pop()
    assert len(stack) == 1 and not words, "unbalanced braces"
    return root


def k8s_nginx_conf() -> str:
    (configmap,) = [d for d in yaml.safe_load_all(K8S_CONFIGMAP.read_text()) if d]
    return str(configmap["data"]["nginx.conf"])


def rendered_template() -> str:
    """The template as roomcast_dev.devcluster renders it for local runs."""
    return render_nginx_config(8080, [18001, 18002], Path("/nonexistent/prefix"), template=TEMPLATE)


CONFIGS = {
    "template": rendered_template,
    "compose": DOCKER.read_text,
    "kubernetes": k8s_nginx_conf,
}


def chat_directives(conf: Block) -> set[tuple[str, ...]]:
    return {d for d in conf.find("location", "=", "/chat").directives if d[0] not in ROUTING}


@pytest.mark.parametrize("other", ["compose", "kubernetes"])
def test_chat_location_directives_match_the_template(other: str) -> None:
    reference = chat_directives(parse(CONFIGS["template"]()))
    # the directives the issue names must be there in the first place
    names = {d[0] for d in reference}
    assert {"proxy_http_version", "proxy_set_header", "proxy_read_timeout", "proxy_send_timeout",
            "proxy_connect_timeout", "proxy_next_upstream", "proxy_next_upstream_tries",
            "proxy_buffering"} <= names  # fmt: skip
    assert ("proxy_set_header", "Upgrade", "$http_upgrade") in reference
    assert ("proxy_set_header", "Connection", "$connection_upgrade") in reference
    assert ("proxy_set_header", "X-Forwarded-For", "$remote_addr") in reference
    assert chat_directives(parse(CONFIGS[other]())) == reference


PAGE_HEADERS = {"Content-Security-Policy", "X-Content-Type-Options", "Referrer-Policy"}


@pytest.mark.parametrize("name", ["template", "compose", "kubernetes"])
def test_the_page_is_served_with_security_headers(name: str) -> None:
    reference = parse(CONFIGS["template"]()).find("location", "/").values("add_header")
    headers = parse(CONFIGS[name]()).find("location", "/").values("add_header")
    assert headers == reference
    assert {h[0] for h in headers} == PAGE_HEADERS
    assert all(h[-1] == "always" for h in headers)  # on 404s too
    csp = next(h[1] for h in headers if h[0] == "Content-Security-Policy")
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "'unsafe-inline'" not in csp


def api_directives(conf: Block) -> set[tuple[str, ...]]:
    return {d for d in conf.find("location", "/api/").directives if d[0] not in ROUTING}


@pytest.mark.parametrize("other", ["compose", "kubernetes"])
def test_api_location_streams_events_and_matches_the_template(other: str) -> None:
    template = parse(CONFIGS["template"]())
    reference = api_directives(template)
    # Answers are buffered in memory only, within fixed bounds: never spooled to disk, so a
    # client that does not read pins at most the buffers (issue 15: ~845 MB through nginx).
    # Server-Sent Events pass unbuffered all the same (the node's X-Accel-Buffering: no) and need
    # a read timeout above the heartbeat (ROOMCAST_SSE_HEARTBEAT, 15 s by default); keep-alive
    # upstream needs an empty Connection.
    assert ("proxy_buffering", "on") in reference
    assert ("proxy_max_temp_file_size", "0") in reference
    buffers = dict((d[0], d[1:]) for d in reference)
    assert buffers["proxy_buffers"] == ("4", "16k") and buffers["proxy_buffer_size"] == ("16k",)
    assert (b"x-accel-buffering", b"no") in _STREAM_HEADERS
    assert ("proxy_http_version", "1.1") in reference
    assert ("proxy_set_header", "Connection", '""') in reference
    (read_timeout,) = [d for d in reference if d[0] == "proxy_read_timeout"]
    assert int(read_timeout[1].rstrip("s")) > 15
    # Replaced with nginx's own view of the client: nodes believe only this one hop.
    assert ("proxy_set_header", "X-Forwarded-For", "$remote_addr") in reference
    assert api_directives(parse(CONFIGS[other]())) == reference
    for name in ("@api_too_large", "@api_too_many", "@api_unavailable"):
        ours, theirs = (
            template.find("location", name),
            parse(CONFIGS[other]()).find("location", name),
        )
        assert ours.directives == theirs.directives
        assert ("default_type", "application/json") in ours.directives


@pytest.mark.parametrize("name", ["template", "compose", "kubernetes"])
def test_client_sockets_have_a_bounded_kernel_send_buffer(name: str) -> None:
    """What a client that does not read pins in nginx's kernel send buffer (autotuned up to
    net.ipv4.tcp_wmem's maximum, 4 MiB by default, otherwise)."""
    (listen,) = parse(CONFIGS[name]()).find("server").values("listen")
    assert "sndbuf=64k" in listen


@pytest.mark.parametrize("other", ["compose", "kubernetes"])
def test_healthz_location_and_upgrade_map_match_the_template(other: str) -> None:
    template, conf = parse(CONFIGS["template"]()), parse(CONFIGS[other]())
    for block in (("location", "=", "/healthz"), ("map", "$http_upgrade", "$connection_upgrade")):
        ours, theirs = template.find(*block), conf.find(*block)
        assert theirs.directives == ours.directives, block
        assert theirs.children == ours.children == []


@pytest.mark.parametrize("name", ["compose", "kubernetes"])
def test_container_configs_follow_scaling_and_fail_over_fast(name: str) -> None:
    conf = parse(CONFIGS[name]())
    http = conf.find("http")
    (resolver,) = http.values("resolver")
    assert "valid=5s" in resolver
    if name == "compose":
        assert resolver[0] == "127.0.0.11", "Docker's embedded DNS"
    chat = conf.find("location", "=", "/chat")
    (proxy_pass,) = chat.values("proxy_pass")
    variable = proxy_pass[0].removeprefix("http://")
    assert variable.startswith("$"), "a variable in proxy_pass makes nginx re-resolve"
    server = conf.find("server")
    (target,) = [d[2] for d in server.directives if d[:2] == ("set", variable)]
    host, _, port = target.rpartition(":")
    assert port == "8000" and host
    assert not [c for c in http.children if c.name == "upstream"], (
        "an upstream block would resolve the nodes once, at start"
    )
    (connect_timeout,) = chat.values("proxy_connect_timeout")
    assert int(connect_timeout[0].rstrip("s")) <= 3
    (next_upstream,) = chat.values("proxy_next_upstream")
    assert {"error", "timeout"} <= set(next_upstream)
    # unprivileged, read-only file system: nothing written outside /tmp, logs on stderr
    (listen,) = conf.find("server").values("listen")
    assert listen[0] == "8080"
    assert conf.values("pid") == [("/tmp/nginx.pid",)]
    assert conf.values("error_log")[0][0] == "stderr"
    for key in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (path,) = http.values(f"{key}_temp_path")
        assert path[0].startswith("/tmp/")
    assert "daemon" not in {d[0] for d in conf.directives}, "set on the command line instead"


def test_k8s_configmap_is_generated_from_the_compose_config() -> None:
    result = subprocess.run(
        [sys.executable, str(SYNC_SCRIPT), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", ["compose", "kubernetes"])
def test_nginx_accepts_the_config(name: str, tmp_path: Path) -> None:
    """`nginx -t` with Debian's nginx (what `make deps` installs), files redirected to tmp."""
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if nginx is None:
        pytest.skip("nginx is not installed (make deps installs nginx-light): cannot run nginx -t")
    text = CONFIGS[name]().replace("/tmp/", f"{tmp_path}/")
    # the cluster DNS name does not resolve here; nginx looks the resolver up at start
    text = re.sub(r"resolver \S+ ", "resolver 127.0.0.1 ", text)
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    result = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", "stderr"],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def _client_key_map(text: str) -> str:
    (block,) = re.findall(
        r"\n\s*map \$remote_addr \$roomcast_client_key \{.*?\n\s*\}\n", text, re.S
    )
    return str(block)


def _ipv6_text(address: ipaddress.IPv6Address) -> str:
    """As nginx writes an address: groups in lowercase hex without leading zeros, "::" for the
    first longest run of two or more zero groups (RFC 5952, which Python's str() follows)."""
    return str(address)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_per_client_connection_key_counts_an_ipv6_client_by_its_64(
    name: str, tmp_path: Path
) -> None:
    """limit_conn's key, run by real nginx over addresses it is told by a trusted hop: every
    address of one /64 gets the same key, whatever "::" hides in its spelling (rotating through
    a /64 got 256 connections per address before); two /64s never share one; an IPv4-mapped
    address counts as its IPv4 address."""
    assert "limit_conn_zone $roomcast_client_key zone=roomcast_per_ip" in CONFIGS[name]()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"daemon off;\npid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\nhttp {{\n"
        f"    access_log off;\n    client_body_temp_path {tmp_path}/body;\n"
        f"    proxy_temp_path {tmp_path}/proxy;\n"
        # Only so that the test can name the client address; the shipped configs believe no one.
        "    set_real_ip_from 127.0.0.1;\n    real_ip_header X-Forwarded-For;\n"
        + _client_key_map(CONFIGS[name]())
        + f"    server {{\n        listen 127.0.0.1:{port};\n"
        '        location / { return 200 "$roomcast_client_key"; }\n    }\n}\n'
    )
    process = ManagedProcess("nginx", [nginx, "-p", str(tmp_path), "-c", str(conf)], {})
    try:
        _wait_for_port(port, process)

        def key(address: str) -> str:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/", headers={"X-Forwarded-For": address}
            )
            with urllib.request.urlopen(request, timeout=scaled(5)) as answer:
                return str(answer.read().decode())

        rng = random.Random(1764)
        # Prefixes whose zero groups "::" can swallow together with the interface id's.
        for prefix in ("2001:db8:5:6", "2001:db8:0:0", "2001:0:0:5", "0:0:0:1", "0:0:0:0", "a::"):
            network = ipaddress.IPv6Network(
                f"{ipaddress.IPv6Address(prefix if '::' in prefix else prefix + '::')}/64"
            )
            base = int(network.network_address)
            ids = [0, 1, 1 << 48, (1 << 48) + 1, (1 << 63) | 1, (1 << 64) - 1] + [
                rng.getrandbits(64) & rng.choice([0xFFFF, 0xFFFF_0000_0000_FFFF, (1 << 64) - 1])
                for _ in range(30)
            ]
            addresses = [_ipv6_text(ipaddress.IPv6Address(base + iid)) for iid in ids]
            expected = ":".join(
                f"{group:x}"
                for group in (
                    base >> 112,
                    (base >> 96) & 0xFFFF,
                    (base >> 80) & 0xFFFF,
                    (base >> 64) & 0xFFFF,
                )
            )
            keys = {address: key(address) for address in addresses}
            assert set(keys.values()) == {expected}, (name, network, keys)
        assert key("2001:db8:5:7::1") == "2001:db8:5:7"
        assert key("192.0.2.7") == "192.0.2.7"
        assert key("::ffff:192.0.2.7") == "192.0.2.7"
    finally:
        process.stop()


def _wait_for_port(port: int, process: ManagedProcess) -> None:
    # nginx says nothing when it listens; each attempt is one connect on loopback.
    deadline = time.monotonic() + scaled(10)
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert process.alive(), process.tail()
            assert time.monotonic() < deadline, "nginx did not listen in time"
            time.sleep(0.02)


LOG_LEVELS = {("limit_req_log_level", "info"), ("limit_conn_log_level", "info")}


@pytest.mark.parametrize("other", ["compose", "kubernetes"])
def test_refusals_logged_and_bodies_refused_as_in_the_template(other: str) -> None:
    """What keeps nginx from writing a line per refused request (red team 17) holds in all
    three: the limit refusals' log level, and the server-level refusal of a body announced at
    seven significant digits (an ``if`` before any location, and the location it goes to)."""
    template, conf = parse(CONFIGS["template"]()), parse(CONFIGS[other]())
    http = template.find("http")
    assert set(http.directives) >= LOG_LEVELS
    assert set(conf.find("http").directives) >= LOG_LEVELS
    for block in (("if", "($content_length"), ("location", "=", "/roomcast-body-too-large")):
        ours, theirs = template.find("server").find(*block), conf.find("server").find(*block)
        assert ours.args == theirs.args and ours.directives == theirs.directives, block
    rule = template.find("server").find("if", "($content_length")
    assert rule.args[0] == "($content_length" and rule.directives == [
        ("rewrite", "^", "/roomcast-body-too-large", "last")
    ]
