"""Helpers shared by the test suites: clients, HTTP and metric reads, waits, paths.

Test modules import from here, never from one another (nor from a conftest), so a suite can be
moved or run alone.
"""
