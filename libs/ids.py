"""Identifiers: time-ordered UUIDv7 strings, made at the edge (docs/storage.md)."""

from uuid6 import uuid7


def new_id() -> str:
    """A new UUIDv7 as its canonical string: sorts by creation time."""
    return str(uuid7())
