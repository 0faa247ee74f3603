"""A connection's entry in a room's presence hash: the member id, then its user_id, in the field."""

from __future__ import annotations

from roomcast.broker.presence_fields import SEPARATOR, field, user_id_of
from roomcast.core.user_ids import UserIds


def test_the_user_id_rides_in_the_field_after_the_member_id() -> None:
    user_id = UserIds.anonymous()
    stored = field("node-1-a1b2c3-7", user_id)
    assert stored == b"node-1-a1b2c3-7" + SEPARATOR + user_id.encode()
    assert user_id_of(stored) == user_id
    # The member prefix a reaper of the release before user ids matches is unchanged.
    assert stored.startswith(b"node-1-a1b2c3-")


def test_an_entry_without_an_id_is_the_member_id_alone() -> None:
    """As a node of the release before user ids writes it, and as one without an id is kept."""
    assert field("node-1-a1b2c3-7", None) == field("node-1-a1b2c3-7", "") == b"node-1-a1b2c3-7"
    assert user_id_of(b"node-1-a1b2c3-7") is None
    assert user_id_of(b"node-1-a1b2c3-7" + SEPARATOR) is None


def test_no_member_id_or_user_id_holds_the_separator() -> None:
    """Node ids are letters, digits and -_.: (runtime.config), user ids URL-safe base64."""
    separator = SEPARATOR.decode()
    assert not separator.isalnum() and separator not in "-_.:"
    assert separator not in UserIds(b"k" * 32).of_subject("alice") + UserIds.anonymous()
