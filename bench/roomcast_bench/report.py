"""From the result dict to the issue's targets, a Markdown table and a PNG plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from roomcast_bench import bigroom, onenode, storm

TIMES = "\u00d7"  # the multiplication sign of ratios
OURS = "roomcast"
BASE = "baseline"


def _find(
    result: dict[str, Any], scenario: str, server: str, via: str | None = None
) -> dict[str, Any] | None:
    for entry in result.get("scenarios", []):
        if (
            entry.get("scenario") == scenario
            and entry.get("server") == server
            and (via is None or entry.get("via") == via)
        ):
            found: dict[str, Any] = entry
            return found
    return None


# Issue 18's limits: setup CPU as a share of the baseline's, delivery CPU as a multiple of the
# bare-write floor.
SETUP_LIMIT = 0.8
DELIVERY_LIMIT = 1.15


def _ratio(ours: float | None, base: float | None) -> float | None:
    if ours is None or base is None or base == 0:
        return None
    return ours / base


def _fanout_step(entry: dict[str, Any] | None) -> dict[str, Any] | None:
    return entry["steps"][-1] if entry and entry.get("steps") else None


def _row(
    target: str, unit: str, ours: float | None, base: float | None, limit: str, met: bool | None,
    note: str = "",
) -> dict[str, Any]:  # fmt: skip
    return {
        "target": target, "unit": unit, "ours": ours, "baseline": base,
        "ratio": _ratio(ours, base), "limit": limit, "met": met, "note": note,
    }  # fmt: skip


def _kernel_note(
    ours: dict[str, Any] | None, base: dict[str, Any] | None, o: float | None, b: float | None,
    limit: float,
) -> str:  # fmt: skip
    """The nodes' kernel time (stime) per unit in both servers, against the target's budget.

    On loopback a sender's write() also runs the receiver's TCP input, so this part is mostly
    the cost of the system calls the work needs, whatever the server is written in.
    """
    if not ours or not base or o is None or b is None:
        return ""
    ours_share = ours.get("system_cpu_share", {}).get("nodes")
    base_share = base.get("system_cpu_share", {}).get("nodes")
    if ours_share is None or base_share is None:
        return ""
    return (
        f"the nodes' kernel time alone: {o * ours_share:.1f} µs here, {b * base_share:.1f} µs"
        f" in the baseline; the target's budget is {b * limit:.1f} µs"
    )


def _limit_bounds(entry: dict[str, Any] | None) -> tuple[float | None, float | None]:
    """A ramp's true limit lies between what its highest sustained step delivered and the lowest
    rate it did not sustain (None where the ramp has no such step)."""
    if not entry:
        return None, None
    steps = entry.get("steps", [])
    passed = [s for s in steps if s.get("sustainable")]
    failed = [s["target_deliveries_per_s"] for s in steps if s.get("sustainable") is False]
    best = max(passed, key=lambda s: s["target_deliveries_per_s"], default=None)
    return (best["deliveries_per_s"] if best else None), min(failed, default=None)


def _short_rate(value: float | None) -> str:
    return "?" if value is None else f"{value:,.0f}"


def ramp_ratio_bounds(ours: dict[str, Any] | None, base: dict[str, Any] | None) -> dict[str, Any]:
    """Bounds of the ratio of the two true limits, from both ramps' brackets: low is roomcast's
    lowest over the baseline's highest, high the other way round (None: unbounded that side)."""
    ours_low, ours_high = _limit_bounds(ours)
    base_low, base_high = _limit_bounds(base)
    if ours is None or base is None:
        return {"low": None, "high": None, "note": ""}
    low = _ratio(ours_low, base_high)
    high = _ratio(ours_high, base_low)
    note = (
        f"true limits (deliveries/s, at least the last sustained, below the first not):"
        f" roomcast {_short_rate(ours_low)} to {_short_rate(ours_high)},"
        f" baseline {_short_rate(base_low)} to {_short_rate(base_high)}; the ratio between"
        f" {'?' if low is None else f'{low:.2f}{TIMES}'} and"
        f" {'?' if high is None else f'{high:.2f}{TIMES}'}"
    )
    return {"low": low, "high": high, "note": note}


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's five targets, each with our figure, the baseline's, the ratio and met/not."""
    rows: list[dict[str, Any]] = []
    rate = result.get("plan", {}).get("fanout_rate", 10_000)

    ours = _fanout_step(_find(result, "fanout", OURS, "direct"))
    base = _fanout_step(_find(result, "fanout", BASE, "direct"))
    o = ours["cpu_us_per_delivery"].get("nodes") if ours else None
    b = base["cpu_us_per_delivery"].get("nodes") if base else None
    # Issue 18: on loopback a delivery's write() (the receiver's TCP input included) is most of
    # any server's cost, so the target is the bare-write floor measured in the same run.
    measured_floor = result.get("write_floor") or {}
    f = measured_floor.get("cpu_us_per_delivery")
    r = _ratio(o, f)
    note = f"the baseline: {b:.2f} µs ({_ratio(b, f) or 0:.2f}{TIMES} the floor)" if b and f else ""
    rows.append(_row(
        f"node CPU per delivery at {rate:,.0f} deliveries/s, nodes direct, against the bare-write"
        " floor (write_floor.py, same run; the floor in the baseline column)", "µs", o, f,
        f"≤ {DELIVERY_LIMIT}{TIMES} floor", None if r is None else r <= DELIVERY_LIMIT, note,
    ))  # fmt: skip

    ours_r = _find(result, "ramp", OURS)
    base_r = _find(result, "ramp", BASE)
    o = ours_r["max_sustainable_deliveries_per_s"] if ours_r else None
    b = base_r["max_sustainable_deliveries_per_s"] if base_r else None
    r = _ratio(o, b)
    notes = []
    if ours_r and ours_r["steps"] and _limit_bounds(ours_r)[1] is None:
        notes.append("roomcast sustained every rate tried: a lower bound")
    bounds = ramp_ratio_bounds(ours_r, base_r)
    if bounds["note"]:
        notes.append(bounds["note"])
    row = _row(
        "highest sustainable deliveries/s through nginx", "deliveries/s", o, b,
        f"≥ 3{TIMES} baseline", None if r is None else r >= 3.0, "; ".join(notes),
    )  # fmt: skip
    row["ratio_low"], row["ratio_high"] = bounds["low"], bounds["high"]
    rows.append(row)

    ours_i = _find(result, "idle", OURS)
    base_i = _find(result, "idle", BASE)
    o = ours_i["kib_per_connection"] if ours_i else None
    b = base_i["kib_per_connection"] if base_i else None
    count = f"{ours_i['connections']:,}" if ours_i else "?"
    rows.append(_row(
        f"node RSS per idle connection ({count} connections)", "KiB", o, b, "≤ 4 KiB",
        None if o is None else o <= 4.0,
    ))  # fmt: skip

    ours_c = _find(result, "connect", OURS)
    base_c = _find(result, "connect", BASE)
    o = ours_c["cpu_us_per_setup"].get("nodes") if ours_c else None
    b = base_c["cpu_us_per_setup"].get("nodes") if base_c else None
    r = _ratio(o, b)
    rows.append(_row(
        "server CPU per connection setup (handshake + join)", "µs", o, b,
        f"≤ {SETUP_LIMIT}{TIMES} baseline", None if r is None else r <= SETUP_LIMIT,
        _kernel_note(ours_c, base_c, o, b, SETUP_LIMIT),
    ))  # fmt: skip

    ours = _fanout_step(_find(result, "fanout", OURS, "nginx"))
    base = _fanout_step(_find(result, "fanout", BASE, "nginx"))
    o = ours["latency_ms"]["p99"] if ours else None
    b = base["latency_ms"]["p99"] if base else None
    rows.append(_row(
        f"p99 fan-out latency at {rate:,.0f} deliveries/s through nginx", "ms", o, b, "< 10 ms",
        None if o is None else o < 10.0,
    ))  # fmt: skip
    return rows


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def markdown(result: dict[str, Any]) -> str:
    lines: list[str] = []
    if result.get("mode") == "smoke":
        lines += [
            "_Smoke run: rooms, rates and durations are far too small for the targets; it only"
            " shows that every part works._",
            "",
        ]
    rows = result.get("targets") or targets(result)
    lines += [
        "| target | roomcast | baseline | ratio | limit | met |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    for row in rows:
        met = {True: "yes", False: "**no**", None: "—"}[row["met"]]
        note = f" ({row['note']})" if row.get("note") else ""
        lines.append(
            f"| {row['target']} ({row['unit']}) | {_fmt(row['ours'])} | {_fmt(row['baseline'])}"
            f" | {_fmt(row['ratio'])}{TIMES if row['ratio'] is not None else ''}"
            f" | {row['limit']}"
            f" | {met}{note} |"
        )
    lines.append("")
    lines += [
        "| scenario | server | via | deliveries/s | loss | p50 ms | p90 ms | p99 ms | max ms"
        " | nodes µs/del | nginx µs/del | redis µs/del | generator µs/del | other load (cores) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        " ---: |",
    ]
    for entry in result.get("scenarios", []):
        if entry["scenario"] not in ("fanout", "ramp"):
            continue
        for step in entry["steps"]:
            lat = step["latency_ms"]
            cpu = step["cpu_us_per_delivery"]
            name = entry["scenario"]
            if name == "ramp" and step.get("phase") == "bisect":
                name += " (bisect)"
            if name.startswith("ramp") and not step.get("sustainable", True):
                name += " (over)"
            lines.append(
                f"| {name} | {entry['server']} | {entry['via']}"
                f" | {_fmt(step['deliveries_per_s'])} | {step['loss']:.2%}"
                f" | {_fmt(lat['p50'])} | {_fmt(lat['p90'])} | {_fmt(lat['p99'])}"
                f" | {_fmt(lat['max'])}"
                f" | {_fmt(cpu.get('nodes'))} | {_fmt(cpu.get('nginx'))} | {_fmt(cpu.get('redis'))}"
                f" | {_fmt(cpu.get('generator'))} | {_fmt(step.get('other_cores_busy'))} |"
            )
    lines.append("")
    idle = [e for e in result.get("scenarios", []) if e["scenario"] == "idle"]
    conn = [e for e in result.get("scenarios", []) if e["scenario"] == "connect"]
    if idle:
        lines += [
            "| idle | connections | node RSS growth (MiB) | KiB/connection | redis growth (KiB) |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for e in idle:
            lines.append(
                f"| {e['server']} | {e['connections']:,} | {e['node_rss_growth_kib'] / 1024:.1f}"
                f" | {_fmt(e['kib_per_connection'])} | {e['redis_rss_growth_kib']:,} |"
            )
        lines.append("")
    if conn:
        lines += [
            "| connect | setups | setups/s | setup p50 ms | setup p99 ms | nodes µs/setup"
            " | redis µs/setup | generator µs/setup |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for e in conn:
            cpu = e["cpu_us_per_setup"]
            lines.append(
                f"| {e['server']} | {e['completed']:,} | {_fmt(e['setups_per_s'])}"
                f" | {_fmt(e['setup_ms']['p50'])} | {_fmt(e['setup_ms']['p99'])}"
                f" | {_fmt(cpu.get('nodes'))} | {_fmt(cpu.get('redis'))}"
                f" | {_fmt(cpu.get('generator'))} |"
            )
        lines.append("")
    lines += bigroom.markdown(result)
    lines += onenode.markdown_lines(result)
    lines += storm.markdown_lines(result)
    lines += _syscall_lines(result)
    for entry in result.get("scenarios", []):
        profile = entry.get("profile")
        if not profile or not profile.get("self_percent"):
            continue
        lines += [
            f"py-spy, one roomcast node, {entry['scenario']} ({profile['samples']} busy samples"
            f" with native frames, {profile.get('waiting_samples_left_out', 0)} more that were"
            " waking in epoll_pwait left out; share of the busy samples):",
            "",
            "| function (self) | % | function (inclusive) | % |",
            "| --- | ---: | --- | ---: |",
        ]
        for (own, own_pct), (inc, inc_pct) in zip(
            profile["self_percent"][:12], profile["total_percent"][:12], strict=False
        ):
            lines.append(f"| `{own}` | {own_pct} | `{inc}` | {inc_pct} |")
        lines.append("")
    return "\n".join(lines)


def _syscall_lines(result: dict[str, Any]) -> list[str]:
    """The nodes' system calls per setup and per delivery, both servers side by side."""
    columns = [
        (server, key, unit)
        for key, scenario, unit in (
            ("syscalls_per_setup", "connect", "setup"),
            ("syscalls_per_delivery", "fanout", "delivery"),
        )
        for server in (OURS, BASE)
        if (_find(result, scenario, server, "direct") or {}).get(key)
    ]
    if not columns:
        return []
    tables = {
        (server, key): (_find(result, "connect" if unit == "setup" else "fanout", server,
                              "direct") or {})[key]
        for server, key, unit in columns
    }  # fmt: skip
    calls: list[str] = []
    for table in tables.values():
        calls += [c for c in table if c not in calls]
    lines = [
        "System calls of the nodes (`perf stat` on syscall tracepoints, during an extra,"
        " unmeasured connect storm and fan-out step; `sys_enter` is all of them):",
        "",
        "| call | " + " | ".join(f"{server} per {unit}" for server, _, unit in columns) + " |",
        "| --- |" + " ---: |" * len(columns),
    ]
    for call in calls:
        cells = [_fmt(tables[(server, key)].get(call)) for server, key, _ in columns]
        lines.append(f"| `{call}` | " + " | ".join(cells) + " |")
    return [*lines, ""]


def plot(result: dict[str, Any], path: Path) -> Path | None:
    """Latency p99 and node CPU µs/delivery versus delivered rate, roomcast vs baseline."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    if not any(e["scenario"] in ("ramp", "fanout") for e in result.get("scenarios", [])):
        return None
    splits = _cpu_splits(result)
    panels = 3 if splits else 2
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.8))
    ax_lat, ax_cpu = axes[0], axes[1]
    colors = {OURS: "tab:blue", BASE: "tab:orange", "target": "tab:green"}
    for entry in result.get("scenarios", []):
        if entry["scenario"] not in ("ramp", "fanout"):
            continue
        server = entry["server"]
        color = colors.get(server, "tab:gray")
        # The ramp's bisection steps come after its highest rate: plotted in order of rate.
        steps = sorted(entry["steps"], key=lambda s: s["target_deliveries_per_s"])
        xs = [s["deliveries_per_s"] for s in steps]
        p99 = [s["latency_ms"]["p99"] for s in steps]
        nodes = [s["cpu_us_per_delivery"].get("nodes") for s in steps]
        nginx = [s["cpu_us_per_delivery"].get("nginx") for s in steps]
        if entry["scenario"] == "ramp":
            label = f"{server} (ramp, via {entry['via']})"
            ax_lat.plot(xs, p99, "o-", color=color, label=label)
            if any(v is not None for v in nodes):
                ax_cpu.plot(xs, nodes, "o-", color=color, label=f"{server} nodes (ramp)")
            if any(v is not None for v in nginx) and entry["via"] == "nginx":
                ax_cpu.plot(xs, nginx, "x:", color=color, label=f"nginx in front of {server}")
        else:
            marker = "s" if entry["via"] == "direct" else "D"
            label = f"{server} (fanout, {entry['via']})"
            ax_lat.plot(xs, p99, marker, color=color, mfc="none", ms=9, label=label)
            if any(v is not None for v in nodes):
                ax_cpu.plot(xs, nodes, marker, color=color, mfc="none", ms=9, label=label)
    _label_rate_axes(ax_lat, ax_cpu)
    if splits:
        _plot_cpu_splits(axes[2], splits, colors)
    for ax in (ax_lat, ax_cpu):
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    room = result.get("plan", {})
    fig.suptitle(
        f"roomcast vs the article's Node server — rooms of {room.get('fanout_members', '?')}"
        f" over 3 nodes, {result.get('machine', {}).get('cpus', '?')} cores shared by everything"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _label_rate_axes(ax_lat: Any, ax_cpu: Any) -> None:
    ax_lat.axhline(10, color="gray", lw=0.8, ls="--")
    ax_lat.axhline(250, color="red", lw=0.8, ls="--")
    ax_lat.set_yscale("log")
    ax_lat.set_xlabel("delivered messages per second")
    ax_lat.set_ylabel("p99 fan-out latency (ms, log)")
    ax_lat.set_title("Latency p99 vs rate (10 ms target, 250 ms ramp limit)")
    ax_cpu.set_xlabel("delivered messages per second")
    ax_cpu.set_ylabel("CPU µs per delivered message")
    ax_cpu.set_title("Server CPU per delivery vs rate")
    ax_cpu.set_ylim(bottom=0)


# (what, scenario, per-unit key)
_CPU_TARGETS: tuple[tuple[str, str, str], ...] = (
    ("per delivery\n(10k/s, direct)", "fanout", "cpu_us_per_delivery"),
    ("per setup\n(handshake + join)", "connect", "cpu_us_per_setup"),
)


def _cpu_splits(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per CPU target: each server's node CPU as kernel + user, in units of the baseline's,
    and the target's limit in the same units (None: the write floor was not measured)."""
    splits = []
    floor = (result.get("write_floor") or {}).get("cpu_us_per_delivery")
    for label, scenario, key in _CPU_TARGETS:
        entries = {server: _find(result, scenario, server, "direct") for server in (OURS, BASE)}
        figures = {}
        for server, entry in entries.items():
            measured = _fanout_step(entry) if scenario == "fanout" else entry
            if not measured:
                break
            total = measured[key].get("nodes")
            share = measured.get("system_cpu_share", {}).get("nodes")
            if total is None or share is None:
                break
            figures[server] = (total * share, total * (1 - share))
        if len(figures) == 2:
            base_total = sum(figures[BASE])
            if scenario == "fanout":
                limit = DELIVERY_LIMIT * floor / base_total if floor else None
                limit_label = f"≤ {DELIVERY_LIMIT:g}{TIMES} write floor"
            else:
                limit, limit_label = SETUP_LIMIT, f"≤ {SETUP_LIMIT:g}{TIMES} baseline"
            splits.append({
                "label": label, "limit": limit, "limit_label": limit_label,
                "servers": {k: (kernel / base_total, user / base_total)
                            for k, (kernel, user) in figures.items()},
            })  # fmt: skip
    return splits


def _plot_cpu_splits(ax: Any, splits: list[dict[str, Any]], colors: dict[str, str]) -> None:
    """Stacked kernel/user bars against each target's budget: where no code change can reach."""
    width = 0.35
    for index, split in enumerate(splits):
        for offset, server in ((-width / 2, OURS), (width / 2, BASE)):
            kernel, user = split["servers"][server]
            x = index + offset
            ax.bar(
                x,
                kernel,
                width,
                color=colors[server],
                hatch="//",
                edgecolor="white",
                label=f"{server}: kernel" if index == 0 else None,
            )
            ax.bar(
                x,
                user,
                width,
                bottom=kernel,
                color=colors[server],
                alpha=0.45,
                label=f"{server}: user space" if index == 0 else None,
            )
        if split["limit"] is None:
            continue
        ax.hlines(
            split["limit"],
            index - 0.45,
            index + 0.45,
            colors="red",
            linestyles="--",
            label="target's budget" if index == 0 else None,
        )
        ax.annotate(split["limit_label"], (index, split["limit"]),
                    xytext=(0, 4), textcoords="offset points", ha="center", fontsize=8,
                    color="red", bbox={"facecolor": "white", "edgecolor": "none",
                                       "alpha": 0.85})  # fmt: skip
    ax.set_xticks(range(len(splits)), [split["label"] for split in splits])
    ax.set_ylabel("node CPU, in units of the baseline's")
    ax.set_title("The two CPU targets: kernel time alone vs budget")
    ax.set_ylim(0, max(sum(v) for s in splits for v in s["servers"].values()) * 1.2)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")


def step_summary(entry: dict[str, Any]) -> str:
    step = entry["steps"][-1]
    lat = step["latency_ms"]
    cpu = step["cpu_us_per_delivery"]
    return (
        f"  {entry['server']} {entry['scenario']}/{entry['via']}:"
        f" {step['deliveries_per_s']:,.0f} del/s, loss {step['loss']:.2%},"
        f" p50 {lat['p50'] or 0:.2f} ms, p99 {lat['p99'] or 0:.2f} ms,"
        f" nodes {cpu.get('nodes') or 0:.2f} µs/del, nginx {cpu.get('nginx') or 0:.2f},"
        f" redis {cpu.get('redis') or 0:.2f}, generator {cpu.get('generator') or 0:.2f}"
    )
