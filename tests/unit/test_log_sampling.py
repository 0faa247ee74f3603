"""Which of many like events get a log line (runtime.log_sampling)."""

from __future__ import annotations

from roomcast.runtime.log_sampling import LogSampler


def test_a_burst_then_one_a_second_each_saying_how_many_went_unlogged() -> None:
    sampler = LogSampler(lines_per_second=1.0, burst=3)
    assert [sampler.admit("bad_origin", now=0.0) for _ in range(5)] == [0, 0, 0, None, None]
    assert sampler.admit("bad_origin", now=0.5) is None
    assert sampler.admit("bad_origin", now=1.0) == 3  # the three since the burst's last line
    assert sampler.admit("bad_origin", now=1.1) is None


def test_each_kind_has_its_own_burst() -> None:
    sampler = LogSampler(lines_per_second=1.0, burst=1)
    assert sampler.admit("token_invalid", now=0.0) == 0
    assert sampler.admit("token_invalid", now=0.0) is None
    assert sampler.admit("malformed_header", now=0.0) == 0  # a flood of one code hides no other


def test_a_quiet_kind_logs_its_burst_again() -> None:
    sampler = LogSampler(lines_per_second=1.0, burst=2)
    for _ in range(4):
        sampler.admit("origin", now=0.0)
    assert sampler.admit("origin", now=60.0) == 2
    assert sampler.admit("origin", now=60.0) == 0
    assert sampler.admit("origin", now=60.0) is None
