"""observability/: Prometheus config and alert rules checked by promtool (and unit-tested with
`promtool test rules`), the Grafana dashboard, and both tied to the metrics the node exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

yaml = pytest.importorskip("yaml", reason="pyyaml is needed: add it to the dev dependencies")

from roomcast.runtime.metrics import Metrics  # noqa: E402
from tests.support.paths import REPO  # noqa: E402

OBS = REPO / "observability"
PROMETHEUS_YML = OBS / "prometheus.yml"
ALERTS = OBS / "alerts.yml"
ALERT_TESTS = OBS / "alerts.test.yml"
DASHBOARD = OBS / "grafana-dashboard.json"
COMPOSE = REPO / "docker-compose.yml"

# PromQL words that are not metric names.
PROMQL_WORDS = {
    "sum", "count", "rate", "increase", "irate", "by", "without", "and", "or", "unless", "on",
    "ignoring", "histogram_quantile", "absent", "le", "avg", "max", "min", "topk", "bottomk",
    "job", "instance", "code", "type", "status", "humanize", "humanizeDuration", "bool",
    "offset", "group_left", "group_right", "clamp_min", "delta", "deriv", "time", "vector",
}  # fmt: skip


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip(
            "promtool is not installed (Debian's `prometheus` package; `make test-deploy` "
            "installs it)"
        )
    return path


def run_promtool(*args: str, cwd: Path = OBS) -> None:
    result = subprocess.run(
        [promtool(), *args], capture_output=True, text=True, cwd=cwd, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_rules() -> None:
    run_promtool("check", "rules", str(ALERTS))


def test_promtool_check_config() -> None:
    run_promtool("check", "config", str(PROMETHEUS_YML))


def test_promtool_unit_tests_of_the_alerts() -> None:
    run_promtool("test", "rules", ALERT_TESTS.name)


def exported_metric_names() -> set[str]:
    """Every sample name a node exports, from the node's own metric definitions."""
    registry = CollectorRegistry()
    Metrics(registry)
    names = set()
    for family in registry.collect():
        if family.type == "counter":
            names |= {f"{family.name}_total", f"{family.name}_created"}
        elif family.type == "histogram":
            names |= {f"{family.name}_{s}" for s in ("bucket", "sum", "count", "created")}
        else:
            names.add(family.name)
    return names | {"up"}


def metric_names_in(expr: str) -> set[str]:
    expr = re.sub(r'"[^"]*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    words = {w for w in words if not re.fullmatch(r"\d+(ms|s|m|h|d)?", w)}
    return {w for w in words - PROMQL_WORDS if not w.startswith("$")}


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_alerts_cover_the_failures_the_issue_names() -> None:
    rules = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    wanted = {
        "node down": r"\bup\b",
        "Redis disconnected": r"roomcast_redis_connected",
        "fan-out p99 latency": r"histogram_quantile\(0\.99,.*fanout_latency_seconds_bucket",
        "slow-consumer drops": r"roomcast_slow_consumer_drops_total",
        "rejected-frame spikes": r"roomcast_frames_rejected_total",
    }
    for what, pattern in wanted.items():
        assert any(re.search(pattern, expr, re.DOTALL) for expr in rules.values()), what
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_alerts_use_only_metrics_the_node_exports() -> None:
    exported = exported_metric_names()
    for rule in alert_rules():
        unknown = metric_names_in(rule["expr"]) - exported
        assert not unknown, f"{rule['alert']}: no such metric {unknown}"


def dashboard_targets() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def test_dashboard_is_importable_grafana_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    (datasource,) = dashboard["templating"]["list"]
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert {"x", "y", "w", "h"} <= panel["gridPos"].keys()
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    exprs = "\n".join(expr for _, expr in dashboard_targets())
    for metric in (
        "roomcast_connections_open",
        "roomcast_rooms_local",
        "roomcast_messages_published_total",
        "roomcast_deliveries_total",
        "roomcast_frames_rejected_total",
        "roomcast_publish_failures_total",
        "roomcast_slow_consumer_drops_total",
    ):
        assert metric in exprs, metric
    for quantile in ("0.5", "0.9", "0.99"):
        assert f"histogram_quantile({quantile}, sum by (le) (rate(roomcast_fanout_latency" in exprs


def test_dashboard_uses_only_metrics_the_node_exports() -> None:
    exported = exported_metric_names()
    for title, expr in dashboard_targets():
        unknown = metric_names_in(expr) - exported - {"__rate_interval"}
        assert not unknown, f"panel {title!r}: no such metric {unknown}"


def test_prometheus_finds_every_compose_replica_on_the_metrics_port() -> None:
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    compose = yaml.safe_load(COMPOSE.read_text())
    node = compose["services"]["node"]
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "roomcast-node"]
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["node"] and "node" in compose["services"], "the compose service name"
    assert sd["type"] == "A"
    assert sd["port"] == int(node["environment"]["ROOMCAST_METRICS_PORT"])
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert "static_configs" not in job, "replicas come and go: discover them"
    # the alert rules are loaded, from where compose mounts them
    mounts = {
        v.split(":")[1]: v.split(":")[0] for v in compose["services"]["prometheus"]["volumes"]
    }
    (config_target,) = [t for t, s in mounts.items() if s == "./observability/prometheus.yml"]
    assert f"--config.file={config_target}" in compose["services"]["prometheus"]["command"]
    config_dir = Path(config_target).parent
    for rule_file in config["rule_files"]:
        source = mounts[str(config_dir / rule_file)]
        assert (REPO / source).resolve() == ALERTS.resolve()
