"""A reference backend for roomcast: log-in, tokens, the three hooks, PostgreSQL, moderation.

README "Example backend"; run it with ``make run-example``.
"""
