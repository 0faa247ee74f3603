"""The benchmark's pure helpers: the kernel-time note under the targets and the profile summary."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from roomcast_bench.report import _cpu_splits, _syscall_lines, targets
from roomcast_bench.scenarios import summarize_collapsed
from roomcast_bench.syscalls import parse_perf_stat, per_unit


def _result(ours_us: float, ours_share: float, base_us: float, base_share: float) -> dict:  # type: ignore[type-arg]
    def connect(server: str, us: float, share: float) -> dict:  # type: ignore[type-arg]
        return {
            "scenario": "connect", "server": server, "via": "direct",
            "cpu_us_per_setup": {"nodes": us}, "system_cpu_share": {"nodes": share},
        }  # fmt: skip

    return {
        "scenarios": [
            connect("roomcast", ours_us, ours_share),
            connect("baseline", base_us, base_share),
        ]
    }


def test_setup_target_row_states_the_kernel_time_of_both_servers_against_the_budget() -> None:
    rows = targets(_result(400.0, 0.4, 300.0, 0.5))
    setup = next(r for r in rows if r["target"].startswith("server CPU per connection setup"))
    assert setup["met"] is False
    assert setup["note"] == (
        "the nodes' kernel time alone: 160.0 µs here, 150.0 µs in the baseline;"
        " the target's budget is 240.0 µs"
    )


def test_kernel_note_is_left_out_when_a_share_is_unknown() -> None:
    result = _result(100.0, 0.4, 300.0, 0.5)
    del result["scenarios"][1]["system_cpu_share"]
    setup = next(r for r in targets(result) if r["target"].startswith("server CPU per connection"))
    assert setup["met"] is True and setup["note"] == ""


def test_profile_summary_leaves_out_samples_waking_in_the_event_loop_wait() -> None:
    collapsed = "\n".join([
        "run (loop.c);epoll_pwait (libc.so.6) 50",
        "run (loop.c);flush (roomcast/transport.py:10);write (libc.so.6) 30",
        "run (loop.c);on_text (roomcast/node.py:5) 10",
        "garbage line",
    ])  # fmt: skip
    summary = summarize_collapsed(collapsed)
    assert summary["samples"] == 40
    assert summary["waiting_samples_left_out"] == 50
    assert summary["self_percent"][0] == ("write (libc.so.6)", 75.0)
    assert ("on_text (node.py)", 25.0) in summary["self_percent"]
    # run (loop.c) is on every busy stack, so it says nothing and is left out of the totals.
    assert ("flush (transport.py)", 75.0) in summary["total_percent"]
    assert all(not name.startswith("run ") for name, _ in summary["total_percent"])


def test_perf_stat_counts_are_parsed_per_call_with_the_total_under_sys_enter() -> None:
    text = "\n".join([
        "109,,raw_syscalls:sys_enter,795995,100.00,,",
        "40,,syscalls:sys_enter_write,795995,100.00,,",
        "0,,syscalls:sys_enter_getpid,795995,100.00,,",
        "<not counted>,,syscalls:sys_enter_read,0,0.00,,",
        "# started on ...",
    ])  # fmt: skip
    counts = parse_perf_stat(text)
    assert counts == {"sys_enter": 109, "write": 40, "getpid": 0}
    assert per_unit(counts, 20) == {"sys_enter": 5.45, "write": 2.0}  # getpid: under 0.05
    assert per_unit(None, 20) is None and per_unit(counts, 0) is None


def test_syscall_table_puts_both_servers_side_by_side() -> None:
    def entry(scenario: str, server: str, key: str, table: dict[str, float]) -> dict[str, Any]:
        return {"scenario": scenario, "server": server, "via": "direct", key: table}

    result = {"scenarios": [
        entry("connect", "roomcast", "syscalls_per_setup", {"sys_enter": 22.9, "write": 9.9}),
        entry("connect", "baseline", "syscalls_per_setup", {"sys_enter": 18.3, "writev": 7.6}),
        entry("fanout", "roomcast", "syscalls_per_delivery", {"sys_enter": 1.1, "write": 1.0}),
    ]}  # fmt: skip
    text = "\n".join(_syscall_lines(result))
    assert "| call | roomcast per setup | baseline per setup | roomcast per delivery |" in text
    assert "| `sys_enter` | 22.90 | 18.30 | 1.10 |" in text
    assert "| `writev` | — | 7.60 | — |" in text


def test_cpu_splits_put_both_servers_in_units_of_the_baselines_cpu() -> None:
    def fanout(server: str, us: float, share: float) -> dict[str, Any]:
        step = {"cpu_us_per_delivery": {"nodes": us}, "system_cpu_share": {"nodes": share}}
        return {"scenario": "fanout", "server": server, "via": "direct", "steps": [step]}

    result: dict[str, Any] = {
        "scenarios": [fanout("roomcast", 15.0, 0.5), fanout("baseline", 20.0, 0.5)]
    }
    (split,) = _cpu_splits(result)  # no connect entries: only the per-delivery target
    assert split["limit"] is None  # no write floor measured: no budget to draw
    assert split["servers"] == {"roomcast": (0.375, 0.375), "baseline": (0.5, 0.5)}
    result["write_floor"] = {"cpu_us_per_delivery": 10.0}
    (split,) = _cpu_splits(result)
    assert split["limit"] == 1.15 * 10.0 / 20.0  # 1.15x the floor, in units of the baseline


def test_delivery_target_is_against_the_write_floor_of_the_same_run() -> None:
    def fanout(server: str, us: float) -> dict[str, Any]:
        step = {"cpu_us_per_delivery": {"nodes": us}, "system_cpu_share": {"nodes": 0.5}}
        return {"scenario": "fanout", "server": server, "via": "direct", "steps": [step]}

    result: dict[str, Any] = {
        "scenarios": [fanout("roomcast", 12.0), fanout("baseline", 16.0)],
        "write_floor": {"cpu_us_per_delivery": 10.0},
    }
    row = targets(result)[0]
    assert row["target"].startswith("node CPU per delivery")
    assert (row["ours"], row["baseline"], row["ratio"]) == (12.0, 10.0, 1.2)
    assert row["met"] is False and row["limit"] == "≤ 1.15\N{MULTIPLICATION SIGN} floor"
    assert row["note"] == "the baseline: 16.00 µs (1.60\N{MULTIPLICATION SIGN} the floor)"
    result["write_floor"] = {"cpu_us_per_delivery": 11.0}
    assert targets(result)[0]["met"] is True
    del result["write_floor"]
    assert targets(result)[0]["met"] is None  # no floor measured: not judged
