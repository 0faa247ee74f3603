"""k8s/ offline: schema validation at a pinned Kubernetes version, `kubectl kustomize`, and
contract tests tying the manifests to what the node image really serves and reads."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="pyyaml is needed: add it to the dev dependencies")
kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is needed: add it to the dev dependencies"
)

from roomcast_dev.devcluster import LocalCluster, ManagedProcess, timeout_factor  # noqa: E402

from roomcast.runtime.config import ConfigError, env_names, load_settings  # noqa: E402
from tests.support import manifests as k8s  # noqa: E402
from tests.support.paths import REPO  # noqa: E402

ALL = k8s.manifests()
NODE_LABELS = {"app.kubernetes.io/name": "roomcast", "app.kubernetes.io/component": "node"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass"}


# --- the files themselves -----------------------------------------------------------------------


def test_apply_f_reads_only_kubernetes_objects() -> None:
    """`kubectl apply -f k8s/` reads every *.yaml/*.yml/*.json in k8s/: each must be an object
    (a kustomization.yaml there would make it fail), and the Namespace must come first."""
    files = k8s.apply_files()
    assert files, "k8s/ holds no manifests"
    assert not [f.name for f in files if f.stem.lower() == "kustomization"], (
        "a kustomization.yaml in k8s/ breaks `kubectl apply -f k8s/`: name it Kustomization"
    )
    for manifest in ALL:
        obj = manifest.obj
        assert {"apiVersion", "kind", "metadata"} <= obj.keys(), manifest.ident
        if manifest.kind in CLUSTER_SCOPED:
            assert "namespace" not in obj["metadata"], manifest.ident
        else:
            assert obj["metadata"].get("namespace") == k8s.NAMESPACE, (
                f"{manifest.ident}: namespace must be {k8s.NAMESPACE} (kubectl apply -f sets none)"
            )
    assert ALL[0].kind == "Namespace" and ALL[0].name == k8s.NAMESPACE, (
        "the Namespace must be in the first file kubectl applies"
    )
    idents = [(m.kind, m.name) for m in ALL]
    assert len(idents) == len(set(idents)), "duplicate objects"


def test_kustomization_lists_exactly_the_apply_files() -> None:
    kustomization = yaml.safe_load((k8s.K8S_DIR / "Kustomization").read_text())
    assert kustomization["kind"] == "Kustomization"
    assert kustomization["resources"] == [f.name for f in k8s.apply_files()], (
        "`kubectl apply -k k8s/` and `kubectl apply -f k8s/` must create the same objects"
    )


@pytest.mark.parametrize("version", [k8s.KUBERNETES_VERSION, k8s.OLDEST_KUBERNETES_VERSION])
@pytest.mark.parametrize("manifest", ALL, ids=lambda m: m.ident)
def test_schema(manifest: k8s.Manifest, version: str) -> None:
    """Strict validation (unknown fields are errors) against the pinned Kubernetes schemas."""
    try:
        kubernetes_validate.validate(manifest.obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = "/".join(str(p) for p in exc.path)
        pytest.fail(f"{manifest.ident} invalid for Kubernetes {version} at {where}: {exc.message}")


def test_kubectl_kustomize_builds() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: cannot run `kubectl kustomize k8s/`")
    result = subprocess.run(
        [kubectl, "kustomize", str(k8s.K8S_DIR)], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    built = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in built) == sorted(
        (m.kind, m.name) for m in ALL
    )
    for doc in built:
        kubernetes_validate.validate(doc, k8s.KUBERNETES_VERSION, strict=True)


# --- labels, selectors, ports -------------------------------------------------------------------


def test_workload_selectors_match_their_pod_labels() -> None:
    for name, template in k8s.pod_templates():
        workload = next(
            m.obj for m in ALL if m.name == name and "template" in m.obj.get("spec", {})
        )
        selector = workload["spec"]["selector"]["matchLabels"]
        assert k8s.selects(selector, template["metadata"]["labels"]), name
        # and selects no other workload's pods (selectors must not overlap)
        assert [n for n, _ in k8s.pods_selected(workload["spec"]["selector"])] == [name]


def test_services_select_pods_and_target_their_named_ports() -> None:
    for service in k8s.objects("Service"):
        name = service["metadata"]["name"]
        selected = k8s.pods_selected(service["spec"]["selector"])
        assert selected, f"Service {name} selects no pod"
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for workload, template in selected:
                if isinstance(target, str):
                    assert target in k8s.container_ports(template), (
                        f"Service {name} targets port {target!r}, not a port of {workload}"
                    )
                else:
                    assert target in k8s.container_port_numbers(template), (name, target)


def test_pdb_and_hpa_refer_to_the_node_deployment() -> None:
    deployment = k8s.get("Deployment", "roomcast-node")
    pdb = k8s.get("PodDisruptionBudget", "roomcast-node")
    assert [n for n, _ in k8s.pods_selected(pdb["spec"]["selector"])] == ["roomcast-node"]
    assert pdb["spec"]["maxUnavailable"] == 1
    hpa = k8s.get("HorizontalPodAutoscaler", "roomcast-node")
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == (
        "apps/v1",
        "Deployment",
        "roomcast-node",
    )
    assert hpa["spec"]["minReplicas"] == deployment["spec"]["replicas"] == 3
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    # CPU utilisation needs CPU requests on every container of the target.
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        assert container["resources"]["requests"]["cpu"]


def _peer_pods(peer: dict[str, Any]) -> list[str]:
    return [n for n, _ in k8s.pods_selected(peer["podSelector"])]


def _allowed(policy_target: str, port_name: str) -> list[dict[str, Any]]:
    """The `from` peers of the policies selecting the pods of ``policy_target`` on a port."""
    template = dict(k8s.pod_templates())[policy_target]
    labels = template["metadata"]["labels"]
    peers: list[dict[str, Any]] = []
    for policy in k8s.objects("NetworkPolicy"):
        if not k8s.selects(policy["spec"]["podSelector"].get("matchLabels", {}), labels):
            continue
        for rule in policy["spec"].get("ingress", []):
            ports = [p["port"] for p in rule.get("ports", [])]
            if ports and port_name not in ports:
                continue
            peers.extend(rule.get("from", [{"anywhere": True}]))
    return peers


def test_network_policies_select_existing_pods_and_ports() -> None:
    policies = k8s.objects("NetworkPolicy")
    assert any(p["spec"]["podSelector"] == {} and "ingress" not in p["spec"] for p in policies), (
        "a default deny-ingress policy for the namespace"
    )
    for policy in policies:
        name = policy["metadata"]["name"]
        selector = policy["spec"]["podSelector"]
        targets = k8s.pods_selected(selector) if selector else list(k8s.pod_templates())
        assert targets, f"NetworkPolicy {name} selects no pod"
        for rule in policy["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                for workload, template in targets:
                    if isinstance(port["port"], str):
                        assert port["port"] in k8s.container_ports(template), (name, workload)
            for peer in rule.get("from", []):
                if "namespaceSelector" in peer:
                    continue  # outside this namespace: checked by the test below
                assert _peer_pods(peer), f"NetworkPolicy {name}: a `from` peer selects no pod"


def test_network_policies_allow_only_the_intended_paths() -> None:
    # nodes' public port: only nginx
    assert [_peer_pods(p) for p in _allowed("roomcast-node", "http")] == [["roomcast-loadbalancer"]]
    # nodes' internal port: Prometheus, and only in the monitoring namespace (a pod labelled
    # prometheus in any namespace used to be let in)
    prometheus = _allowed("roomcast-node", "metrics")
    assert prometheus == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        }
    ]
    # Redis: only the nodes
    assert [_peer_pods(p) for p in _allowed("roomcast-redis", "redis")] == [["roomcast-node"]]
    # nginx: everyone, on its port
    assert _allowed("roomcast-loadbalancer", "http") == [{"anywhere": True}]


# --- the node Deployment against the node's code ------------------------------------------------


SECRET_MOUNT = "/var/run/secrets/roomcast/"


def _node_config() -> dict[str, str]:
    data = k8s.get("ConfigMap", "roomcast-node")["data"]
    assert all(isinstance(v, str) for v in data.values())
    return dict(data)


def _node_env(pod_name: str = "roomcast-node-7c9d8b6f5-x2x7k") -> dict[str, str]:
    """The environment the node container gets: ConfigMap (envFrom) + env (fieldRefs resolved)."""
    container = k8s.node_container()
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        env.update(k8s.get("ConfigMap", ref)["data"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            assert var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", var
            env[var["name"]] = pod_name
    return env


MAKE_SECRETS = k8s.K8S_DIR / "make-secrets.sh"


def _generated_secret() -> dict[str, Any]:
    """The Secret k8s/make-secrets.sh prints, as the README has operators make it."""
    printed = subprocess.run(
        ["sh", str(MAKE_SECRETS)], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    secret = yaml.safe_load(printed)
    assert isinstance(secret, dict)
    return secret


def _with_secret_files(
    env: dict[str, str], directory: Path, secret: dict[str, Any] | None = None
) -> dict[str, str]:
    """The Secret's files (generated ones unless given), as the kubelet mounts them, at paths
    that exist here."""
    directory.mkdir(exist_ok=True)
    secret = secret or _generated_secret()
    for key, value in secret["stringData"].items():
        (directory / key).write_text(value)
    mounted = dict(env)
    for name, path in env.items():
        if name.endswith("_FILE"):
            assert path.startswith(SECRET_MOUNT), (name, path)
            mounted[name] = str(directory / path.removeprefix(SECRET_MOUNT))
    return mounted


def test_secret_files_the_node_reads_are_mounted_from_the_secret() -> None:
    container = k8s.node_container()
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["secrets"].rstrip("/") + "/" == SECRET_MOUNT
    pod_spec = k8s.get("Deployment", "roomcast-node")["spec"]["template"]["spec"]
    volume = next(v for v in pod_spec["volumes"] if v["name"] == "secrets")
    items = {i["path"] for i in volume["secret"]["items"]}
    secret = k8s.get("Secret", "roomcast-secrets")["stringData"]
    for name, path in _node_env().items():
        if name.endswith("_FILE"):
            assert (
                path.removeprefix(SECRET_MOUNT) in items
                and path.removeprefix(SECRET_MOUNT) in secret
            )


def test_every_env_name_is_read_by_the_node_and_every_value_accepted(tmp_path: Path) -> None:
    known = set(env_names())
    env = _with_secret_files(_node_env(), tmp_path / "secrets")
    unknown = sorted(set(env) - known)
    assert not unknown, (
        f"the node reads no such variable: {unknown} (roomcast.runtime.config.env_names())"
    )
    try:
        settings = load_settings(env)
    except ConfigError as exc:
        pytest.fail(f"the node would refuse the manifest's configuration: {exc}")
    assert settings.host == "0.0.0.0", "in a pod the node must listen on all addresses"
    # The URL (with the Redis password) comes from the Secret and names the Redis Service.
    password = Path(tmp_path / "secrets" / "redis-password").read_text()
    assert settings.redis_url == f"redis://:{password}@roomcast-redis:6379/0"
    assert settings.auth_enabled  # tokens are required in the cluster
    assert k8s.get("Service", "roomcast-redis")["spec"]["ports"][0]["port"] == 6379


def test_the_shipped_placeholder_secret_is_refused(tmp_path: Path) -> None:
    """A deployment that applies k8s/ without generating its secrets does not start: a token
    signed with the published placeholder would otherwise be admitted as anyone."""
    shipped = k8s.get("Secret", "roomcast-secrets")
    env = _with_secret_files(_node_env(), tmp_path / "secrets", shipped)
    with pytest.raises(ConfigError, match="refusing to start with guessable secrets") as refused:
        load_settings(env)
    message = str(refused.value)
    for variable in (
        "ROOMCAST_AUTH_SECRET",
        "ROOMCAST_USER_ID_KEY",
        "ROOMCAST_API_KEYS",
        "ROOMCAST_REDIS_URL",
    ):
        assert variable in message
    for value in shipped["stringData"].values():
        assert value not in message  # not even a placeholder is echoed


def test_make_secrets_generates_fresh_secrets_for_every_key() -> None:
    shipped = k8s.get("Secret", "roomcast-secrets")
    first, second = _generated_secret(), _generated_secret()
    assert first["metadata"] == shipped["metadata"]
    assert set(first["stringData"]) == set(shipped["stringData"])
    data = first["stringData"]
    assert data["redis-url"] == f"redis://:{data['redis-password']}@roomcast-redis:6379/0"
    for key in ("auth-secret", "user-id-key", "redis-password", "api-keys"):
        assert data[key] != second["stringData"][key]
        assert len(data[key]) >= 48


def test_redis_gets_its_password_from_the_environment_and_a_memory_bound() -> None:
    redis_pod = k8s.get("Deployment", "roomcast-redis")["spec"]["template"]["spec"]
    (container,) = redis_pod["containers"]
    command = " ".join(container.get("command", []) + container.get("args", []))
    # No password on a command line (`ps`, the pod spec): a config file written in memory.
    assert "--requirepass" not in command and "$(REDIS" not in command
    assert " -a " not in " ".join(container["readinessProbe"]["exec"]["command"])
    env = {e["name"]: e for e in container["env"]}
    assert env["REDISCLI_AUTH"]["valueFrom"]["secretKeyRef"]["key"] == "redis-password"
    maxmemory = re.search(r"maxmemory (\d+)mb", command)
    assert maxmemory is not None and "maxmemory-policy volatile-ttl" in command
    limit = container["resources"]["limits"]["memory"]
    assert limit.endswith("Mi")
    # Headroom between Redis' bound and the pod's: client buffers, fragmentation.
    assert int(maxmemory[1]) <= 0.8 * int(limit.removesuffix("Mi"))
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in redis_pod["volumes"]}
    assert volumes[mounts["/run/redis"]]["emptyDir"]["medium"] == "Memory"


def test_service_environment_variables_cannot_shadow_the_nodes_configuration() -> None:
    """Kubernetes injects <SERVICE>_PORT=tcp://... for every Service; a Service named e.g.
    "roomcast-metrics" would set ROOMCAST_METRICS_PORT and stop the node. Turned off, and no
    Service name would collide anyway."""
    for _, template in k8s.pod_templates():
        assert template["spec"].get("enableServiceLinks") is False
    for service in k8s.objects("Service"):
        prefix = service["metadata"]["name"].upper().replace("-", "_")
        injected = {f"{prefix}_PORT", f"{prefix}_SERVICE_HOST", f"{prefix}_SERVICE_PORT"}
        assert not injected & set(env_names()), service["metadata"]["name"]


def test_ports_and_probes_name_what_the_config_sets() -> None:
    container = k8s.node_container()
    config = _node_config()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {
        "http": int(config["ROOMCAST_PORT"]),
        "metrics": int(config["ROOMCAST_METRICS_PORT"]),
    }
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    annotations = k8s.get("Deployment", "roomcast-node")["spec"]["template"]["metadata"][
        "annotations"
    ]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == ports["metrics"]
    assert annotations["prometheus.io/path"] == "/metrics"
    service_ports = {p["name"]: p for p in k8s.get("Service", "roomcast-node")["spec"]["ports"]}
    assert service_ports["http"]["port"] == ports["http"]
    assert service_ports["metrics"]["port"] == ports["metrics"]


def test_termination_outlasts_prestop_plus_drain() -> None:
    spec = k8s.get("Deployment", "roomcast-node")["spec"]["template"]["spec"]
    container = k8s.node_container()
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep", command
    pre_stop = float(command[1])
    assert 1 <= pre_stop <= 15
    drain = float(_node_env()["ROOMCAST_DRAIN_TIMEOUT"])
    assert spec["terminationGracePeriodSeconds"] > pre_stop + drain + 5, (
        "the kubelet would SIGKILL the node before its drain deadline"
    )


def test_every_pod_is_hardened_and_bounded() -> None:
    for name, template in k8s.pod_templates():
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod.get("automountServiceAccountToken") is False, name
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            resources = container["resources"]
            assert {"cpu", "memory"} <= resources["requests"].keys(), name
            assert {"cpu", "memory"} <= resources["limits"].keys(), name
            assert container.get("readinessProbe") and container.get("livenessProbe"), name


def test_node_runs_as_the_image_user() -> None:
    dockerfile = (REPO / "node" / "Dockerfile").read_text()
    user = re.findall(r"^USER\s+(\d+):(\d+)\s*$", dockerfile, re.MULTILINE)
    assert user, "node/Dockerfile must end with a numeric USER uid:gid"
    uid, gid = user[-1]
    context = k8s.get("Deployment", "roomcast-node")["spec"]["template"]["spec"]["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"]) == (int(uid), int(gid))
    exposed = set(re.findall(r"^EXPOSE\s+(.+)$", dockerfile, re.MULTILINE)[-1].split())
    assert {str(p["containerPort"]) for p in k8s.node_container()["ports"]} == exposed


def test_loadbalancer_serves_the_generated_config() -> None:
    deployment = k8s.get("Deployment", "roomcast-loadbalancer")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    conf_path = container["command"][container["command"].index("-c") + 1]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_volume = volumes["config"]["configMap"]
    assert conf_path == f"{mounts['config']}/{config_volume['items'][0]['path']}"
    configmap = k8s.get("ConfigMap", config_volume["name"])
    assert config_volume["items"][0]["key"] in configmap["data"]
    assert "listen 8080" in configmap["data"]["nginx.conf"]
    assert k8s.container_ports(deployment["spec"]["template"]) == {"http": 8080}
    service = k8s.get("Service", "roomcast-loadbalancer")
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    # nginx finds the nodes through the headless Service's DNS name
    node_service = k8s.get("Service", "roomcast-node")
    assert node_service["spec"]["clusterIP"] == "None"
    fqdn = f"roomcast-node.{k8s.NAMESPACE}.svc.cluster.local:{_node_config()['ROOMCAST_PORT']}"
    assert f"set $roomcast_nodes {fqdn};" in configmap["data"]["nginx.conf"]


def test_optional_servicemonitor_targets_the_node_service() -> None:
    (monitor,) = [m.obj for m in k8s.load(k8s.optional_files()) if m.kind == "ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    service = k8s.get("Service", "roomcast-node")
    assert k8s.selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [k8s.NAMESPACE]
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in service_ports
        assert endpoint["path"] == "/metrics"


# --- a real node process started with the manifest's environment ------------------------------


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_a_node_started_with_the_manifest_env_serves_the_probe_paths(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The ConfigMap + Deployment environment, as the kubelet would give it, to a real node
    process; Redis is a local redis-server (the in-cluster name does not resolve here). The
    node must listen on the ports the manifest declares and answer the paths its probes and
    scrape annotations name with 200, then drain on SIGTERM within the grace period."""
    env = _node_env()
    wanted = {"ROOMCAST_PORT": int(env["ROOMCAST_PORT"]),
              "ROOMCAST_METRICS_PORT": int(env["ROOMCAST_METRICS_PORT"])}  # fmt: skip
    remapped = {}
    for name, port in wanted.items():
        if not _port_free(port):
            remapped[name] = _free_port()
    with capsys.disabled():
        if remapped:
            print(f"\n  manifest ports busy here, remapped: {remapped}")
    with LocalCluster(0, redis=True, nginx=False) as cluster:
        assert cluster.redis_url is not None
        process_env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}
        process_env.update(env)
        process_env.update({k: str(v) for k, v in remapped.items()})
        process_env.update(_with_secret_files(env, cluster.workdir / "secrets"))
        # The in-cluster Redis name does not resolve here: a local redis-server instead.
        process_env.pop("ROOMCAST_REDIS_URL_FILE", None)
        process_env["ROOMCAST_REDIS_URL"] = cluster.redis_url
        process_env["PYTHONUNBUFFERED"] = "1"
        node = ManagedProcess("manifest-node", [sys.executable, "-m", "roomcast"], process_env)
        try:
            line = node.wait_for_line(lambda text: '"event":"listening"' in text, 20)
            info = json.loads(line)
            expected = {**wanted, **remapped}
            assert info["port"] == expected["ROOMCAST_PORT"]
            assert info["metrics_port"] == expected["ROOMCAST_METRICS_PORT"]
            assert info["host"] == env["ROOMCAST_HOST"]
            assert info["node"] == env["ROOMCAST_NODE_ID"]
            assert info["broker"] == "redis"

            container = k8s.node_container()
            container = k8s.node_container()
            declared = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert declared == {"http": wanted["ROOMCAST_PORT"],
                                "metrics": wanted["ROOMCAST_METRICS_PORT"]}  # fmt: skip
            variable = {"http": "ROOMCAST_PORT", "metrics": "ROOMCAST_METRICS_PORT"}
            listening = {name: expected[variable[name]] for name in declared}
            annotations = k8s.get("Deployment", "roomcast-node")["spec"]["template"]["metadata"][
                "annotations"
            ]
            liveness = container["livenessProbe"]["httpGet"]
            readiness = container["readinessProbe"]["httpGet"]
            paths = [
                (liveness["port"], liveness["path"]),
                (readiness["port"], readiness["path"]),
                ("metrics", annotations["prometheus.io/path"]),
            ]
            deadline = time.monotonic() + 15 * timeout_factor()
            for port_name, path in paths:
                url = f"http://127.0.0.1:{listening[port_name]}{path}"
                status, body = _get(url)
                while status != 200 and time.monotonic() < deadline:  # readyz: Redis subscribe
                    time.sleep(0.1)
                    status, body = _get(url)
                assert status == 200, f"{url} answered {status}: {body!r}"
            assert b"roomcast_connections_open" in body

            # SIGTERM (what the kubelet sends after preStop): exit 0 before the grace period ends
            started = time.monotonic()
            node.signal(signal.SIGTERM)
            code = node.popen.wait(timeout=float(env["ROOMCAST_DRAIN_TIMEOUT"]) + 5)
            assert code == 0, node.tail()
            grace = k8s.get("Deployment", "roomcast-node")["spec"]["template"]["spec"][
                "terminationGracePeriodSeconds"
            ]
            assert time.monotonic() - started < grace
        finally:
            node.stop()
