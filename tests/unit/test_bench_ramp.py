"""The ramp's search for the highest sustainable rate: geometric steps, then a bisection of the
last step, and the bracket of both servers' limits in the report."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from roomcast_bench.ramp import RampSearch
from roomcast_bench.report import markdown, targets
from roomcast_bench.scenarios import Plan

RATES = Plan().ramp_rates


def run(search: RampSearch, limit: float) -> list[tuple[float, bool, str]]:
    """The search against a server that sustains exactly the rates up to ``limit``."""
    tried = []
    while (rate := search.next_rate()) is not None:
        phase = search.phase
        sustained = rate <= limit
        search.record(rate, sustained)
        tried.append((rate, sustained, phase))
        assert len(tried) < 50, tried
    return tried


def test_bisection_after_the_first_failing_step_brings_the_bracket_within_five_percent() -> None:
    search = RampSearch(RATES)
    tried = run(search, 270_000.0)
    # The geometric steps up to 300k (the first failing one), then bisections in between.
    geometric = [rate for rate, _, phase in tried if phase == "ramp"]
    assert geometric == list(RATES[: RATES.index(300_000) + 1])
    bisections = [(rate, ok) for rate, ok, phase in tried if phase == "bisect"]
    assert bisections == [(273_861.0, False), (261_659.0, True)]
    assert (search.last_pass, search.first_fail) == (261_659.0, 273_861.0)
    ratio = search.bracket_ratio()
    assert ratio is not None and ratio <= 1.05
    assert search.bisections == 2


def test_every_limit_is_found_within_five_percent_in_at_most_four_more_steps() -> None:
    # Without the bisection the last step sustained sat up to 50 % below the limit (10k -> 20k
    # is a doubling; 250k -> 300k is 20 %).
    for limit in range(5_000, 500_000, 1_234):
        search = RampSearch(RATES)
        run(search, float(limit))
        assert search.bisections <= 4, limit
        assert search.last_pass is not None and search.first_fail is not None, limit
        assert search.last_pass <= limit < search.first_fail, limit
        assert limit / search.last_pass <= 1.05, (limit, search.last_pass)


def test_no_bisection_when_every_rate_or_the_first_one_fails() -> None:
    search = RampSearch((500.0, 1_000.0))
    assert [phase for _, _, phase in run(search, 10_000.0)] == ["ramp", "ramp"]
    assert (search.last_pass, search.first_fail, search.bracket_ratio()) == (1_000.0, None, None)
    search = RampSearch((500.0, 1_000.0))
    assert run(search, 100.0) == [(500.0, False, "ramp")]
    assert (search.last_pass, search.first_fail, search.bisections) == (None, 500.0, 0)


def test_a_noisy_pass_below_the_bracket_does_not_lower_it() -> None:
    search = RampSearch((100.0, 200.0), resolution=0.01, max_bisections=3)
    search.record(100.0, True)
    search.record(200.0, False)
    middle = search.next_rate()
    assert middle == 141.0
    search.record(middle, False)
    search.record(search.next_rate() or 0.0, True)  # 119
    assert (search.last_pass, search.first_fail) == (119.0, 141.0)
    search.record(search.next_rate() or 0.0, False)  # 130
    assert search.next_rate() is None  # at most 3 bisection steps
    assert (search.last_pass, search.first_fail) == (119.0, 130.0)


def _ramp(server: str, steps: Sequence[tuple[float, float, bool, str]]) -> dict[str, Any]:
    return {
        "scenario": "ramp", "server": server, "via": "nginx",
        "steps": [
            {"target_deliveries_per_s": float(target), "deliveries_per_s": float(delivered),
             "sustainable": ok, "phase": phase, "loss": 0.0,
             "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": 3.0, "max": 4.0},
             "cpu_us_per_delivery": {"nodes": 1.0}}
            for target, delivered, ok, phase in steps
        ],
        "max_sustainable_deliveries_per_s": max(d for _, d, ok, _ in steps if ok),
    }  # fmt: skip


def test_the_report_bounds_the_ratio_of_the_two_limits_by_both_brackets() -> None:
    ours = [(250_000, 246_000, True, "ramp"), (300_000, 293_000, False, "ramp"),
            (273_861, 270_000, False, "bisect"), (261_659, 258_000, True, "bisect")]  # fmt: skip
    base = [(100_000, 99_000, True, "ramp"), (120_000, 119_000, False, "ramp"),
            (109_545, 108_000, False, "bisect"), (104_664, 104_000, True, "bisect")]  # fmt: skip
    result = {"scenarios": [_ramp("roomcast", ours), _ramp("baseline", base)]}
    row = next(r for r in targets(result) if r["target"].startswith("highest sustainable"))
    assert (row["ours"], row["baseline"]) == (258_000, 104_000)
    # roomcast's limit is in [258,000, 273,861), the baseline's in [104,000, 109,545); the last
    # step sustained is no longer a sign that every rate was.
    assert row["ratio_low"] == 258_000 / 109_545
    assert row["ratio_high"] == 273_861 / 104_000
    assert row["note"] == (
        "true limits (deliveries/s, at least the last sustained, below the first not):"
        " roomcast 258,000 to 273,861, baseline 104,000 to 109,545; the ratio between"
        " 2.36\N{MULTIPLICATION SIGN} and"
        " 2.63\N{MULTIPLICATION SIGN}"
    )
    table = markdown(result)
    assert "| ramp (bisect) | roomcast | nginx | 258,000 |" in table
    assert "| ramp (bisect) (over) | baseline | nginx | 108,000 |" in table
    # A ramp that never failed is a lower bound, and the ratio has no upper bound.
    result["scenarios"][0]["steps"] = result["scenarios"][0]["steps"][:1]
    row = next(r for r in targets(result) if r["target"].startswith("highest sustainable"))
    assert row["note"].startswith("roomcast sustained every rate tried: a lower bound; ")
    assert row["ratio_low"] == 246_000 / 109_545 and row["ratio_high"] is None
