"""Seeded schedules: the same seed replays the same faults; every round covers every kind."""

from __future__ import annotations

import itertools

from tests.chaos.faults import FAULTS_BY_TOPOLOGY, HOLD_RANGES, INJECTORS
from tests.chaos.schedule import steps


def test_same_seed_same_schedule_other_seed_other_schedule() -> None:
    kinds = FAULTS_BY_TOPOLOGY["standalone"]
    first = list(itertools.islice(steps(7, kinds), 30))
    assert first == list(itertools.islice(steps(7, kinds), 30))
    assert first != list(itertools.islice(steps(8, kinds), 30))


def test_each_round_has_every_kind_once_within_its_hold_range() -> None:
    kinds = FAULTS_BY_TOPOLOGY["standalone"]
    drawn = list(itertools.islice(steps(3, kinds), 2 * len(kinds)))
    for round_ in (drawn[: len(kinds)], drawn[len(kinds) :]):
        assert sorted(step.kind for step, _ in round_) == sorted(kinds)
    for step, pause in drawn:
        low, high = HOLD_RANGES.get(step.kind, (0.0, 0.0))
        assert low <= step.hold <= high and pause > 0


def test_every_listed_kind_has_an_injector() -> None:
    for kinds in FAULTS_BY_TOPOLOGY.values():
        assert set(kinds) <= set(INJECTORS)
