"""The Python client's cursor after a ``loss`` ``epoch_changed`` whose ``new_epoch`` is null (the
room had no message in its new epoch yet: what a node's gap filler says right after Redis
restarted empty). Before, the cursor forgot where it was (``since()`` None): a connection lost
before the new epoch's first message reached it rejoined with a plain join, whose ``joined`` says
nothing of what the new epoch holds, and the messages acknowledged there meanwhile were skipped
without a ``Gap``. Now the rejoin resumes from the old epoch's position, and the server's
``recovered: false`` becomes a ``Gap`` naming the new epoch's offsets missed.
(tests/integration/test_faultteam9_client_epoch_unknown.py: the same across real servers.)
"""

from __future__ import annotations

from roomcast.client import ChatMessage, Gap, Joined, RoomCursor
from roomcast.client.events import Loss


def msg(offset: int, epoch: str) -> ChatMessage:
    return ChatMessage("r", "ann", "t", 0, offset, epoch)


def unknown_epoch(epoch: str, first: int) -> Loss:
    return Loss("r", "epoch_changed", epoch, first, None, None)


def test_a_rejoin_after_an_epoch_changed_to_an_unknown_one_resumes_and_reports_the_gap() -> None:
    cursor = RoomCursor("r", "e1", 13)
    assert cursor.on_loss(unknown_epoch("e1", 14)) == Gap("r", "epoch_changed", "", 0)
    assert cursor.since() == {"offset": 13, "epoch": "e1"}  # before: None, a plain join
    # By the rejoin the new epoch holds 5 messages this client never got: it is told.
    answer = Joined("r", "ann", "e2", 5, recovered=False, reason="epoch_changed")
    assert cursor.on_joined(answer) == Gap("r", "epoch_changed", "e2", 5)
    assert cursor.since() == {"offset": 5, "epoch": "e2"}
    assert cursor.accept(msg(6, "e2")) == (True, None)


def test_the_new_epochs_first_message_ends_the_wait_for_it() -> None:
    cursor = RoomCursor("r", "e1", 13)
    cursor.on_loss(unknown_epoch("e1", 14))
    assert cursor.accept(msg(1, "e2")) == (True, None)
    assert cursor.since() == {"offset": 1, "epoch": "e2"}


def test_two_unknown_epochs_in_a_row_resume_from_the_last_known_position() -> None:
    cursor = RoomCursor("r", "e1", 13)
    cursor.on_loss(unknown_epoch("e1", 14))
    # A second restart before any message: the notice names no epoch the client knew.
    assert cursor.on_loss(unknown_epoch("", 1)) == Gap("r", "epoch_changed", "", 0)
    assert cursor.since() == {"offset": 13, "epoch": "e1"}


def test_a_client_that_never_saw_the_room_still_joins_plainly() -> None:
    cursor = RoomCursor("r")
    assert cursor.since() is None
