"""A connection's entry in a room's presence hash: the member id, then its user_id, in the field."""

from __future__ import annotations

from roomcast.broker.presence_fields import SEPARATOR, field, tally
from roomcast.core.user_ids import UserIds


def test_the_user_id_rides_in_the_field_after_the_member_id() -> None:
    user_id = UserIds.anonymous()
    stored = field("node-1-a1b2c3-7", user_id)
    assert stored == b"node-1-a1b2c3-7" + SEPARATOR + user_id.encode()
    # The member prefix a reaper of the release before user ids matches is unchanged.
    assert stored.startswith(b"node-1-a1b2c3-")


def test_an_entry_without_an_id_is_the_member_id_alone() -> None:
    """As a node of the release before user ids writes it, and as one without an id is kept."""
    assert field("node-1-a1b2c3-7", None) == field("node-1-a1b2c3-7", "") == b"node-1-a1b2c3-7"


def test_a_rooms_hash_reads_as_each_name_with_the_id_of_each_connection() -> None:
    """Namesakes under one name; entries of a previous release's node (no separator) and an
    empty id count with no id."""
    hash_reply = [
        field("node-1-a-1", "id-1"), b"alice",
        field("node-2-b-4", "id-2"), b"alice",
        b"old-c-9", b"alice",
        field("node-1-a-2", "id-1"), b"alice",
        b"old-c-3" + SEPARATOR, b"bob",
        field("node-1-a-5", "id-3"), "zoë".encode(),
    ]  # fmt: skip
    assert tally(hash_reply) == {
        "alice": ["id-1", "id-2", None, "id-1"],
        "bob": [None],
        "zoë": ["id-3"],
    }
    assert tally([]) == {}


def test_no_member_id_or_user_id_holds_the_separator() -> None:
    """Node ids are letters, digits and -_.: (runtime.config), user ids URL-safe base64."""
    separator = SEPARATOR.decode()
    assert not separator.isalnum() and separator not in "-_.:"
    assert separator not in UserIds(b"k" * 32).of_subject("alice") + UserIds.anonymous()
