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
        "s), 171-495 ms later (its maximum of ~40 round trips; p50 2 ms; node CPU 0.36-0.42 s), "
        "against 150 ms at factor 3; 151-1174 ms in stop 29 at load 3-7, where the node got about "
        "a quarter of a core (148 ms of CPU in 571 ms). Left: each 60 KB message is ~24 MB of "
        "kernel copies into 400 sockets in one loop turn (40-90 ms), and the bystander's requests "
        "each take several turns. Tried, not merged: at most 1 MiB of big writes per turn, the "
        "rest waiting outside the node-wide send total: 89-325 ms (median 154), at the price of "
        "that memory bound and a per-delivery cost the noise could not rule out (1.36x -> 1.42x "
        "the write floor, three runs each)"
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
    # Red team 18: the node's handshake bound holds, but a burst of setups is one long turn.
    "tests/adversarial/test_redteam18_documented_bounds.py::"
    "test_many_addresses_each_under_its_handshake_bound_meet_the_nodes": (
        "20 addresses, 60 WebSocket handshakes each at once (each under its 400): the node admits "
        "1,069-1,154 and answers 46-131 503 with Retry-After 1 (all counted; its bound 500 + "
        "1,000/s held), node CPU 0.43-0.45 s, but a bystander on the node at 380-744 ms at its "
        "maximum (p50 7-12 ms), against 150 ms at factor 3; one address's own legal burst of 400 "
        "at once: 190-267 ms (node CPU 0.2 s). The sockets that are ready together are set up in "
        "one loop turn (~0.4 ms each) before the bystander's read. Tried, not merged (too late in "
        "the stop to run the handshake suites on it): a 10 ms budget of handshakes per loop "
        "turn, the rest answered in later turns after the reads that came meanwhile: 195-217 ms "
        "(two runs); the same budget over the heads' parsing too: 207-429 ms (three runs, load "
        "3): no clear gain over the noise, so the stall is not the setups alone"
    ),
}
