"""Attacks this suite still wins (open findings of issue 15), each with what was measured, and
the failures found too late in stop 12 to fix.

`make test` (and so CI) leaves these out and prints each one with its reason, so the rest of the
suite guards what is fixed; `make test-adversarial` runs them all (ROOMCAST_RUN_OPEN_FINDINGS=1).
An entry is removed the day its attack is defended; nothing else may be added here without a
measured figure and a line in the closing note of the stop that adds it.
"""

from __future__ import annotations

from typing import Final

OPEN_FINDINGS: Final[dict[str, str]] = {
    # Red team 5: memory is bounded now (test_silent_readers_..._pin_a_bounded_total); CPU not.
    "tests/adversarial/test_redteam5_many_addresses.py::"
    "test_bystander_keeps_its_round_trip_while_silent_readers_fill": (
        "400 silent WebSockets from 100 addresses in one room, five addresses sending their legal "
        "bursts of 60 KB messages: a bystander on the node at 4.8 s p99 on main (node CPU 0.65 "
        "s), 171-495 ms now (its maximum of ~40 round trips; p50 2 ms; node CPU 0.36-0.42 s), "
        "against 150 ms at factor 3: the kernel copies of the fan-out into 400 sockets (~170 MiB "
        "in one burst) are left"
    ),
    # Red team 7: nginx counts connections per address only once a request head is read.
    "tests/adversarial/test_redteam7_nginx_slow_heads.py::"
    "test_one_address_holds_no_more_unfinished_heads_than_its_limit": (
        "one address held 400 connections to nginx whose request heads never ended, past its "
        "limit_conn of 256: nginx counts a request only once its head is read, and nothing "
        "else bounds them but client_header_timeout (10 s now, 60 s on main). Worked out, not "
        "measured: ~28,000 per address (its ephemeral ports), three addresses hold the 65,536 "
        "connections of the shipped Kubernetes nginx. A per-address TCP cap in front of nginx "
        "(host firewall, cloud load balancer) is the fix: docs/security.md"
    ),
    # Red team 10: a token's `name` is all other members see of a user.
    "tests/adversarial/test_redteam10_namesakes.py::test_two_users_of_one_name_are_told_apart": (
        "two users (sub alice and mallory) whose tokens both say name 'Alice': the watcher's two "
        "message events differ only in text, offset and timestamp ({'type': 'message', 'room': "
        "..., 'username': 'Alice'} both), and the shipped page shows the impostor's as the "
        "reader's own when the reader is Alice. Needs a stable author field (the sub, or an id "
        "the application gives) in every event about a user: a protocol and privacy decision "
        "(a sub is often an e-mail address); refusing a second 'Alice' refuses real namesakes"
    ),
    "tests/adversarial/test_redteam10_churn_cover.py::"
    "test_a_churning_address_does_not_hide_other_users_joins": (
        "one address reconnecting into a room in 4 loops for 2 s (598 open-join-close cycles on "
        "one node) turns the room's presence events into presence_changed counts for every "
        "member (red team 8's churn coalescing, whoever causes it, until 10 s of quiet): bob "
        "joining right after was never named by user_joined, the member got 3 counts. Naming "
        "everybody but the churner needs the client of each join on the room's channel (the "
        "join script publishes user_joined); refusing the churner's joins refused legitimate "
        "rejoins (red team 8)"
    ),
}
