"""A small HTTP client for end-to-end tests: what a real client of the API does."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    headers: dict[str, str]

    def error_code(self) -> str | None:
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return self.body["error"].get("code")
        return None


@dataclass(frozen=True)
class User:
    id: str
    username: str
    password: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class Api:
    def __init__(self, http: aiohttp.ClientSession, base_url: str) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        data: bytes | None = None,
    ) -> Reply:
        all_headers = dict(headers or {})
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        async with self.http.request(
            method, self.base_url + path, json=json, data=data, headers=all_headers, params=params
        ) as response:
            raw = await response.read()
            try:
                body: Any = await response.json(content_type=None) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            return Reply(response.status, body, dict(response.headers))

    async def register(
        self,
        username: str | None = None,
        password: str | None = None,
        display_name: str | None = None,
    ) -> Reply:
        body: dict[str, Any] = {
            "username": username or unique_username(),
            "password": password or "correct horse battery",
        }
        if display_name is not None:
            body["display_name"] = display_name
        return await self.call("POST", "/v1/users", json=body)

    async def login(self, username: str, password: str) -> Reply:
        return await self.call(
            "POST", "/v1/sessions", json={"username": username, "password": password}
        )

    async def new_user(self, prefix: str = "u") -> User:
        """Register and log in a fresh user; fail loudly if either step fails."""
        username = unique_username(prefix)
        password = "pw-" + secrets.token_hex(8)
        registered = await self.register(username, password)
        assert registered.status == 201, registered
        login = await self.login(username, password)
        assert login.status == 201, login
        return User(registered.body["id"], username, password, login.body["token"])


def unique_username(prefix: str = "u") -> str:
    return f"{prefix}_{secrets.token_hex(6)}"[:32]
