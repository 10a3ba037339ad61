"""Fixtures of the browser tests: people in Chromium windows, and a REST helper.

The browsers are started once per module (a Chromium start costs about a second
of the two cores) and closed at its end. Screenshots of the main screens go to
docs/screenshots/, which the README shows.
"""

from __future__ import annotations

import json
import secrets
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.system import ROOT
from tests.webapp.browser import Person

SCREENSHOTS = ROOT / "docs" / "screenshots"
PASSWORD = "correct horse battery"


def rest(base_url: str, method: str, path: str, body: Any = None, token: str = "") -> Any:
    """One JSON request to the gateway, as a script would make it."""
    request = urllib.request.Request(
        base_url + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            **({"Authorization": f"Bearer {token}"} if token else {}),
        },
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        raw = response.read()
        return json.loads(raw) if raw else None


@pytest.fixture(scope="module")
def suffix() -> str:
    return secrets.token_hex(3)


@pytest.fixture(scope="module")
def people(gateway_url: str, suffix: str) -> Iterator[dict[str, Person]]:
    """Ada, Bob and Cy, each registered in a browser of their own."""
    opened: dict[str, Person] = {}
    try:
        for name, display in (("ada", "Ada Lovelace"), ("bob", "Bob Babbage"), ("cy", "Cy Hopper")):
            person = Person(gateway_url, name)
            opened[name] = person
            person.register(f"{name}{suffix}", PASSWORD, display)
        yield opened
    finally:
        for person in opened.values():
            person.close()


def screenshot(person: Person, name: str) -> Path:
    path = SCREENSHOTS / f"{name}.png"
    person.screenshot(path)
    return path
