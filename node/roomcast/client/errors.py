"""What ``RoomcastClient`` raises."""

from __future__ import annotations

from roomcast.client.events import Closed, Error


class ClientClosedError(Exception):
    """The client stopped (``close()``, a fatal close code or refused credentials)."""

    def __init__(self, closed: Closed) -> None:
        super().__init__(closed.reason)
        self.closed = closed


class JoinError(Exception):
    def __init__(self, error: Error) -> None:
        super().__init__(f"join of {error.room!r} refused: {error.code}: {error.reason}")
        self.error = error


class LinkLost(Exception):
    """The connection a request was sent on ended before its answer came."""
