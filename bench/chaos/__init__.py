"""Chaos testing of cluster mode (`make chaos`): clients, faults, checker.

See docs/reliability.md.
"""
