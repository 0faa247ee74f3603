"""Seeded fault schedules: the same seed gives the same sequence of faults, targets and holds.

Kinds come in shuffled rounds (every enabled kind once per round, in a seeded order), so even a
short run covers each kind, and a long one keeps mixing them. Between two faults the system gets
a seeded pause to recover under traffic.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

from tests.chaos.faults import HOLD_RANGES, VARIANTS, Step

PAUSE_RANGE = (1.0, 2.5)  # seconds of plain traffic between faults


def steps(seed: int, kinds: Sequence[str]) -> Iterator[tuple[Step, float]]:
    """Endless (step, pause after it) pairs for ``kinds``; the caller stops at its deadline."""
    if not kinds:
        raise ValueError("no fault kinds")
    rng = random.Random(seed)
    while True:
        round_ = list(kinds)
        rng.shuffle(round_)
        for kind in round_:
            low, high = HOLD_RANGES.get(kind, (0.0, 0.0))
            variants = VARIANTS.get(kind, ("",))
            step = Step(kind, rng.randrange(1000), rng.uniform(low, high), rng.choice(variants))
            yield step, rng.uniform(*PAUSE_RANGE)
