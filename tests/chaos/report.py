"""A run's figures: counters, loss attributed to fault kinds, reconnect times through nginx,
presence; as a JSON document and as a short text summary."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tests.chaos.faults import FaultRecord
from tests.chaos.runner import RunResult

# A message first seen this long before a fault started, or after it ended, is blamed on it.
BLAME_BEFORE_SECONDS = 1.0
BLAME_AFTER_SECONDS = 5.0
NODE_LOSS_KINDS = ("node_kill", "node_drain")


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def blame(moment: float, faults: list[FaultRecord]) -> str:
    """The latest fault whose window holds ``moment`` (when a missing message was first seen,
    when a refusal that was delivered anyway was given)."""
    candidates = [
        f
        for f in faults
        if f.started - BLAME_BEFORE_SECONDS <= moment <= f.ended + BLAME_AFTER_SECONDS
    ]
    return max(candidates, key=lambda f: f.started).kind if candidates else "no_fault"


def reconnect_times(result: RunResult) -> dict[str, Any]:
    """Reconnects of clients whose node was killed or drained, from loss to the next welcome."""
    out: dict[str, Any] = {}
    for kind in NODE_LOSS_KINDS:
        windows = [(f.target, f.started, f.ended) for f in result.faults if f.kind == kind]
        episodes = [
            r
            for client in result.clients
            for r in client.reconnects
            if any(
                r.lost_node == victim and start - 0.5 <= r.lost_at <= end + 5
                for victim, start, end in windows
            )
        ]
        seconds = [r.seconds for r in episodes if r.seconds is not None]
        out[kind] = {
            "episodes": len(episodes),
            "p50_s": percentile(seconds, 0.5),
            "p99_s": percentile(seconds, 0.99),
            "max_s": max(seconds, default=None),
            "first_retry_ok": sum(1 for r in episodes if r.attempts == 1),
            "never_back": sum(1 for r in episodes if r.back_at is None),
        }
    return out


def summary(result: RunResult) -> dict[str, Any]:
    verdict = result.verdict
    per_kind: dict[str, dict[str, int]] = {}

    def bucket(kind: str) -> dict[str, int]:
        empty = {"runs": 0, "missing": 0, "missing_unacked": 0, "refused_delivered": 0}
        return per_kind.setdefault(kind, empty)

    for fault in result.faults:
        bucket(fault.kind)["runs"] += 1
    for missing in verdict.missing_list:
        kind = blame(missing.first_seen, result.faults)
        bucket(kind)["missing" if missing.acked else "missing_unacked"] += 1
    for refused in verdict.refused_delivered_list:
        bucket(blame(refused.refused_at, result.faults))["refused_delivered"] += 1
    counters = verdict.counters()
    counters["reconnects"] = sum(len(c.reconnects) for c in result.clients)
    counters["failed_connection_attempts"] = sum(c.failed_attempts for c in result.clients)
    return {
        "seed": result.config.seed,
        "topology": result.config.topology,
        "duration_s": result.config.duration,
        "wall_s": round(result.wall_seconds, 1),
        "timeline_start_monotonic": result.timeline_start,  # fault times are relative to it
        "ok": verdict.ok and result.presence.ok,
        "failures": verdict.failures | ({} if result.presence.ok else {"presence": 1}),
        "counters": counters,
        "caught_up": result.caught_up,
        "per_fault_kind": per_kind,
        "reconnect_through_nginx": reconnect_times(result),
        "presence": asdict(result.presence),
        "faults": [
            asdict(f)
            | {
                "started": round(f.started - result.timeline_start, 2),
                "ended": round(f.ended - result.timeline_start, 2),
            }
            for f in result.faults
        ],
        "examples": verdict.examples,
        "diagnostics": result.diagnostics,
        "config": asdict(result.config),
    }


def text(doc: dict[str, Any]) -> str:
    c = doc["counters"]
    verdict = "PASS" if doc["ok"] else "FAIL " + json.dumps(doc["failures"])
    lines = [
        f"chaos {doc['topology']} seed={doc['seed']} duration={doc['duration_s']}s "
        f"({doc['wall_s']}s wall): {verdict}",
        f"  acknowledged {c['acknowledged']}  refused {c['refused']}  unconfirmed "
        f"{c['unconfirmed']}  unknown fate "
        f"{c['unknown_fate']}  owed deliveries {c['owed']}  delivered {c['delivered']}",
        f"  missing {c['missing']} (+{c['missing_unacked']} unacked)  duplicates {c['duplicates']}"
        f"  out-of-order {c['out_of_order']}  lost with notice {c['lost_with_notice']}"
        f"  loss notices {c['loss_notices']}",
        f"  refused delivered {c['refused_delivered']}  text conflicts {c['text_conflicts']}"
        f"  republished {c['republished']}  unanswered {c['unanswered']}"
        f"  reconnects {c['reconnects']}",
    ]
    for kind, stats in sorted(doc["per_fault_kind"].items()):
        lines.append(
            f"  {kind:<26} x{stats['runs']:<3} missing {stats['missing']:>5}"
            f" (+{stats['missing_unacked']} unacked)  refused delivered"
            f" {stats['refused_delivered']}"
        )
    for kind, stats in doc["reconnect_through_nginx"].items():
        if stats["episodes"]:
            lines.append(
                f"  reconnect after {kind}: n={stats['episodes']} p50 {stats['p50_s']:.2f}s "
                f"p99 {stats['p99_s']:.2f}s max {stats['max_s']:.2f}s, first retry ok "
                f"{stats['first_retry_ok']}/{stats['episodes']}"
            )
    presence = doc["presence"]
    lines.append(
        f"  presence converged after {presence['converged_after']}s "
        f"(bound {presence['bound_seconds']:.1f}s) ghosts {presence['ghosts']} "
        f"absent {presence['absent']}"
    )
    for kind, examples in doc["examples"].items():
        lines.append(f"  e.g. {kind}: {examples[:3]}")
    return "\n".join(lines)


def write(doc: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
