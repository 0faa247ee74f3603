"""Resuming a room with ``since``: the client's position and how the resume came out. No I/O.

A client keeps the last ``(epoch, offset)`` it saw and sends it as ``since`` when it rejoins; the
answer's :class:`~roomcast.wire.codes.RecoveryStatus` says whether every missed message follows.
How the node splits a room's stream at the join point is :mod:`roomcast.core.catch_up`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from roomcast.wire.codes import RecoveryStatus

RECOVERED: Final = RecoveryStatus.RECOVERED
EPOCH_CHANGED: Final = RecoveryStatus.EPOCH_CHANGED
TOO_OLD: Final = RecoveryStatus.TOO_OLD
NOT_REQUESTED: Final = RecoveryStatus.NOT_REQUESTED


@dataclass(frozen=True, slots=True)
class Since:
    offset: int
    epoch: str
