"""observability/grafana-dashboard.json read as data: its panels, their PromQL and legends, and a
picture of it drawn from what Prometheus answers for each panel.

No Grafana server can run here (it is not in Debian or PyPI), so the picture is drawn with
matplotlib from the dashboard's own layout (`gridPos`), titles, expressions, legends and units:
every figure in it is the answer of a real Prometheus to the panel's real expression.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from roomcast_dev.devcluster import REPO_ROOT

DASHBOARD_FILE = REPO_ROOT / "observability" / "grafana-dashboard.json"
GRID_COLUMNS = 24  # Grafana's grid is 24 columns wide; a row unit is about 30 px.
_LEGEND_FIELD = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str  # legendFormat, e.g. "{{instance}}"; "" means the series' labels


@dataclass(frozen=True)
class Panel:
    title: str
    kind: str  # "stat" or "timeseries"
    x: int
    y: int
    w: int
    h: int
    unit: str
    targets: tuple[Target, ...]


def load_panels(path: Path = DASHBOARD_FILE, rate_interval: str = "30s") -> list[Panel]:
    """The dashboard's panels, `$__rate_interval` replaced by `rate_interval` (Grafana's value
    is at least four scrape intervals)."""
    dashboard = orjson.loads(path.read_bytes())
    panels = []
    for raw in dashboard["panels"]:
        grid = raw["gridPos"]
        targets = tuple(
            Target(
                expr=t["expr"].replace("$__rate_interval", rate_interval),
                legend=t.get("legendFormat", ""),
            )
            for t in raw.get("targets", [])
        )
        unit = raw.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        panels.append(
            Panel(
                raw["title"], raw["type"], grid["x"], grid["y"], grid["w"], grid["h"], unit, targets
            )
        )
    return panels


def legend_text(target: Target, labels: Mapping[str, str]) -> str:
    if target.legend and target.legend != "__auto":
        return _LEGEND_FIELD.sub(lambda m: labels.get(m.group(1), ""), target.legend)
    shown = {k: v for k, v in labels.items() if k != "__name__"}
    return ", ".join(f"{k}={v}" for k, v in sorted(shown.items())) or target.expr


def format_value(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    if abs(value) >= 10_000:
        return f"{value / 1000:.1f}k"
    if value == int(value):
        return f"{int(value)}"
    return f"{value:.1f}"


# One series of a panel: legend and (timestamps, values).
Series = tuple[str, list[float], list[float]]
QueryRange = Callable[[str], list[dict[str, Any]]]


def collect(panels: Sequence[Panel], query_range: QueryRange) -> dict[str, list[Series]]:
    """Each panel's series, by title, from `query_range(expr)` (Prometheus' matrix result)."""
    collected: dict[str, list[Series]] = {}
    for panel in panels:
        series: list[Series] = []
        for target in panel.targets:
            for item in query_range(target.expr):
                times = [float(t) for t, _ in item["values"]]
                values = [float(v) for _, v in item["values"]]
                series.append((legend_text(target, item["metric"]), times, values))
        collected[panel.title] = series
    return collected


def render(
    panels: Sequence[Panel], series: Mapping[str, list[Series]], out: Path, title: str
) -> None:
    """Draw the dashboard in Grafana's dark layout to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    rows = max(p.y + p.h for p in panels)
    background, panel_colour, text_colour, grid_colour = "#111217", "#181b1f", "#ccccdc", "#2c3235"
    figure = plt.figure(figsize=(16, rows * 0.42), facecolor=background)
    spec = figure.add_gridspec(
        rows, GRID_COLUMNS, hspace=3.2, wspace=0.6, top=0.955, bottom=0.02, left=0.03, right=0.99
    )
    figure.suptitle(title, color=text_colour, x=0.01, ha="left", fontsize=13)
    for panel in panels:
        axes = figure.add_subplot(spec[panel.y : panel.y + panel.h, panel.x : panel.x + panel.w])
        axes.set_facecolor(panel_colour)
        axes.set_title(panel.title, color=text_colour, loc="left", fontsize=9)
        for side in axes.spines.values():
            side.set_color(grid_colour)
        found = series.get(panel.title, [])
        if panel.kind == "stat":
            axes.set_xticks([])
            axes.set_yticks([])
            last = [values[-1] for _, _, values in found if values]
            text = " / ".join(format_value(v, panel.unit) for v in last) if last else "No data"
            axes.text(
                0.5,
                0.45,
                text,
                color="#73bf69",
                fontsize=22,
                ha="center",
                va="center",
                transform=axes.transAxes,
                weight="bold",
            )
            continue
        axes.tick_params(colors=text_colour, labelsize=7)
        axes.grid(color=grid_colour, linewidth=0.5)
        if not found:
            axes.text(
                0.5,
                0.5,
                "No data",
                color=text_colour,
                ha="center",
                va="center",
                transform=axes.transAxes,
            )
        for legend, times, values in found:
            scaled = [v * 1000 for v in values] if panel.unit == "s" else values
            axes.plot(times, scaled, linewidth=1.2, label=legend)
        if panel.unit == "s":
            axes.set_ylabel("ms", color=text_colour, fontsize=7)
        axes.xaxis.set_major_formatter(FuncFormatter(_clock))
        if found:
            axes.legend(
                fontsize=6,
                facecolor=panel_colour,
                edgecolor=grid_colour,
                labelcolor=text_colour,
                loc="upper left",
                ncols=2,
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110, facecolor=background, bbox_inches="tight")
    plt.close(figure)


def _clock(stamp: float, _position: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).strftime("%H:%M:%S")
