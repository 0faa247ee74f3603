"""RoomRegistry: local room bookkeeping (joining, live, leaving)."""

from __future__ import annotations

import pytest

from roomcast.core.node_rooms import NodeRooms
from roomcast.core.rooms import JoinResult, RoomRegistry, TooManyRoomsError

FIRST = JoinResult(first_local_member=True, already_member=False)
NOT_FIRST = JoinResult(first_local_member=False, already_member=False)
AGAIN = JoinResult(first_local_member=False, already_member=True)


def registry(max_rooms: int = 16) -> RoomRegistry[str]:
    return RoomRegistry(max_rooms)


def join_live(rooms: RoomRegistry[str], member: str, room: str, username: str) -> JoinResult:
    result = rooms.join(member, room, username)
    rooms.activate(member, room)
    return result


def test_empty_registry() -> None:
    rooms = registry()
    assert rooms.current_room("a") is None
    assert rooms.username("a", "r") is None
    assert rooms.rooms_of("a") == []
    assert rooms.members("r") == {}
    assert rooms.all_members("r") == {}
    assert not rooms.has_room("r")
    assert not rooms.is_live("a", "r")
    assert rooms.rooms() == []
    assert rooms.room_count == 0
    assert rooms.member_count == 0


def test_first_local_member_only_for_first_joiner() -> None:
    rooms = registry()
    assert join_live(rooms, "a", "r", "alice") == FIRST
    assert join_live(rooms, "b", "r", "bob") == NOT_FIRST
    assert join_live(rooms, "a", "s", "alice") == FIRST
    assert rooms.room_count == 2
    assert rooms.member_count == 2
    assert rooms.has_room("r")
    assert rooms.has_room("s")


def test_joining_member_counts_but_is_not_live() -> None:
    rooms = registry()
    assert rooms.join("a", "r", "alice") == FIRST
    # A second joiner while the first is still joining is not first.
    assert rooms.join("b", "r", "bob") == NOT_FIRST
    assert rooms.has_room("r")
    assert rooms.room_count == 1
    assert rooms.rooms() == ["r"]
    assert rooms.members("r") == {}
    assert rooms.all_members("r") == {"a": "alice", "b": "bob"}
    assert not rooms.is_live("a", "r")
    assert rooms.username("a", "r") == "alice"
    assert rooms.current_room("a") == "r"
    assert rooms.activate("a", "r") is True
    assert rooms.is_live("a", "r")
    assert rooms.members("r") == {"a": "alice"}
    assert rooms.all_members("r") == {"a": "alice", "b": "bob"}
    assert rooms.activate("a", "r") is False  # already live
    assert rooms.activate("b", "r") is True
    assert list(rooms.members("r")) == ["a", "b"]


def test_activate_after_leave_is_refused() -> None:
    rooms = registry()
    rooms.join("a", "r", "alice")
    assert rooms.leave("a", "r") is True
    assert rooms.activate("a", "r") is False
    assert rooms.members("r") == {}
    assert not rooms.has_room("r")


def test_leave_while_joining_with_live_member_present() -> None:
    rooms = registry()
    join_live(rooms, "a", "r", "alice")
    rooms.join("b", "r", "bob")
    assert rooms.leave("b", "r") is False
    assert rooms.all_members("r") == {"a": "alice"}
    assert rooms.leave("a", "r") is True
    assert rooms.room_count == 0


def test_leave_reports_last_member() -> None:
    rooms = registry()
    join_live(rooms, "a", "r", "alice")
    join_live(rooms, "b", "r", "bob")
    assert rooms.leave("a", "r") is False
    assert rooms.has_room("r")
    assert rooms.leave("b", "r") is True
    assert not rooms.has_room("r")
    assert rooms.room_count == 0
    assert rooms.member_count == 0


def test_room_becomes_first_again_after_emptying() -> None:
    rooms = registry()
    join_live(rooms, "a", "r", "alice")
    rooms.leave("a", "r")
    assert rooms.join("b", "r", "bob").first_local_member is True


def test_leave_of_non_member_is_false_and_harmless() -> None:
    rooms = registry()
    join_live(rooms, "a", "r", "alice")
    assert rooms.leave("b", "r") is False
    assert rooms.leave("a", "other") is False
    assert rooms.members("r") == {"a": "alice"}
    assert rooms.rooms_of("a") == ["r"]


def test_rejoin_is_idempotent_and_makes_room_current() -> None:
    rooms = registry()
    join_live(rooms, "a", "r1", "alice")
    join_live(rooms, "a", "r2", "alice")
    assert rooms.current_room("a") == "r2"
    assert rooms.join("a", "r1", "alice") == AGAIN
    assert rooms.current_room("a") == "r1"
    assert rooms.rooms_of("a") == ["r2", "r1"]
    assert rooms.members("r1") == {"a": "alice"}
    assert rooms.is_live("a", "r1")
    assert rooms.room_count == 2
    # A single leave undoes any number of joins.
    assert rooms.leave("a", "r1") is True
    assert rooms.rooms_of("a") == ["r2"]


def test_rejoin_keeps_first_username() -> None:
    rooms = registry()
    join_live(rooms, "a", "r", "alice")
    assert rooms.join("a", "r", "alicia") == AGAIN
    assert rooms.username("a", "r") == "alice"
    assert rooms.members("r") == {"a": "alice"}


def test_current_room_is_last_joined() -> None:
    rooms = registry()
    join_live(rooms, "a", "r1", "alice")
    assert rooms.current_room("a") == "r1"
    join_live(rooms, "a", "r2", "alice")
    join_live(rooms, "a", "r3", "alice")
    assert rooms.current_room("a") == "r3"


def test_current_room_falls_back_after_leaving_last_joined() -> None:
    rooms = registry()
    for room in ("r1", "r2", "r3"):
        join_live(rooms, "a", room, "alice")
    rooms.leave("a", "r3")
    assert rooms.current_room("a") == "r2"
    rooms.leave("a", "r1")
    assert rooms.current_room("a") == "r2"
    rooms.leave("a", "r2")
    assert rooms.current_room("a") is None


def test_leaving_a_middle_room_keeps_current() -> None:
    rooms = registry()
    for room in ("r1", "r2", "r3"):
        join_live(rooms, "a", room, "alice")
    rooms.leave("a", "r2")
    assert rooms.current_room("a") == "r3"
    assert rooms.rooms_of("a") == ["r1", "r3"]


def test_max_rooms_raises() -> None:
    rooms = registry(max_rooms=2)
    join_live(rooms, "a", "r1", "alice")
    rooms.join("a", "r2", "alice")  # joining counts toward the limit too
    with pytest.raises(TooManyRoomsError, match="a connection may be in at most 2 rooms"):
        rooms.join("a", "r3", "alice")
    # Nothing changed.
    assert rooms.rooms_of("a") == ["r1", "r2"]
    assert not rooms.has_room("r3")
    assert rooms.current_room("a") == "r2"
    # Re-joining a room already held is fine at the limit.
    assert rooms.join("a", "r1", "alice") == AGAIN
    # Another member is unaffected by a's limit.
    assert rooms.join("b", "r3", "bob") == FIRST
    # After leaving one, a can join another.
    rooms.leave("a", "r2")
    assert rooms.join("a", "r3", "alice") == NOT_FIRST


def test_max_rooms_of_one() -> None:
    rooms = registry(max_rooms=1)
    rooms.join("a", "r1", "alice")
    with pytest.raises(TooManyRoomsError):
        rooms.join("a", "r2", "alice")


def test_leave_all_returns_each_room_with_last_member_flag() -> None:
    rooms = registry()
    join_live(rooms, "a", "r1", "alice")
    join_live(rooms, "a", "r2", "al")
    join_live(rooms, "b", "r2", "bob")
    rooms.join("a", "r3", "alice")  # still joining
    result = rooms.leave_all("a")
    assert result == [("r1", "alice", True), ("r2", "al", False), ("r3", "alice", True)]
    assert rooms.rooms_of("a") == []
    assert rooms.current_room("a") is None
    assert rooms.rooms() == ["r2"]
    assert rooms.members("r2") == {"b": "bob"}
    assert rooms.member_count == 1
    assert rooms.leave_all("a") == []


def test_leave_all_in_join_order_after_rejoin() -> None:
    rooms = registry()
    join_live(rooms, "a", "r1", "alice")
    join_live(rooms, "a", "r2", "alice")
    rooms.join("a", "r1", "alice")
    assert [room for room, _, _ in rooms.leave_all("a")] == ["r2", "r1"]


def test_members_keep_join_order() -> None:
    rooms = registry()
    for member in ("c", "a", "b", "d"):
        join_live(rooms, member, "r", member.upper())
    assert list(rooms.members("r")) == ["c", "a", "b", "d"]
    rooms.leave("a", "r")
    join_live(rooms, "a", "r", "A")
    assert list(rooms.members("r").items()) == [("c", "C"), ("b", "B"), ("d", "D"), ("a", "A")]


def test_members_is_live_view() -> None:
    rooms = registry()
    join_live(rooms, "a", "r", "alice")
    view = rooms.members("r")
    join_live(rooms, "b", "r", "bob")
    assert view == {"a": "alice", "b": "bob"}


def test_username_per_room() -> None:
    rooms = registry()
    join_live(rooms, "a", "r1", "alice")
    join_live(rooms, "a", "r2", "ally")
    assert rooms.username("a", "r1") == "alice"
    assert rooms.username("a", "r2") == "ally"
    assert rooms.username("a", "r3") is None


def test_a_node_holds_at_most_its_rooms_but_its_rooms_stay_open() -> None:
    rooms: RoomRegistry[str] = RoomRegistry(16, NodeRooms(2))
    join_live(rooms, "a", "r1", "alice")
    rooms.join("b", "r2", "bob")  # a join in flight holds its room too
    with pytest.raises(TooManyRoomsError, match="this node holds its most rooms"):
        rooms.join("c", "r3", "carol")
    assert not rooms.has_room("r3") and rooms.rooms_of("c") == []
    # Rooms the node holds take more members at the cap.
    assert rooms.join("c", "r1", "carol") == NOT_FIRST
    assert rooms.join("c", "r2", "carol") == NOT_FIRST
    # A room whose last member left frees its place.
    rooms.leave("b", "r2")
    rooms.leave("c", "r2")
    assert rooms.join("c", "r3", "carol") == FIRST
    assert rooms.room_count == 2
