"""The benchmark's pure helpers: the kernel-time note under the targets and the profile summary."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from roomcast_bench.report import targets
from roomcast_bench.scenarios import summarize_collapsed


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
        " the target's budget is 150.0 µs"
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
