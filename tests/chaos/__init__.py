"""A black-box fault-injection suite for roomcast's delivery guarantee (issue 14).

Real redis-server, node and nginx processes; clients that speak the public WebSocket protocol
through nginx; faults injected only through what an operator has: signals, Redis commands,
``ROOMCAST_*`` variables and a TCP relay between a node and Redis. ``checker`` then judges
everything the clients saw. ``python -m tests.chaos --help`` runs a soak; ``test_chaos.py`` is
the short fixed-seed run of ``make test``.
"""
