"""A real push receiver on 127.0.0.1 for the notification tests.

It plays both a Web Push service (it holds each subscription's private key, checks
the VAPID JWT against the server's public key and decrypts the RFC 8291 payload
with http_ece) and a webhook endpoint (it checks the HMAC-SHA256 signature over
"<timestamp>.<body>"). Paths say how to answer: /{kind}/{mode}/{tag} with mode
`ok` (201), `gone` (410), `hang` (holds the request until released) or `flaky`
(503 the first time, then 201).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import http_ece
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Subscription:
    """A browser's side of a Web Push subscription: its keys never leave the receiver."""

    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes

    def as_json(self) -> dict[str, Any]:
        point = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": self.endpoint,
            "keys": {"p256dh": b64url(point), "auth": b64url(self.auth)},
        }


@dataclass
class Received:
    kind: str  # webpush | webhook
    tag: str
    payload: dict[str, Any]
    raw: bytes


@dataclass
class Receiver:
    base_url: str = ""
    vapid_public_key: str = ""
    received: list[Received] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    hanging: set[str] = field(default_factory=set)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    secrets_by_tag: dict[str, str] = field(default_factory=dict)

    def subscription(self, mode: str = "ok") -> tuple[str, Subscription]:
        tag = secrets.token_hex(6)
        sub = Subscription(
            f"{self.base_url}/webpush/{mode}/{tag}",
            ec.generate_private_key(ec.SECP256R1()),
            secrets.token_bytes(16),
        )
        self.subscriptions[tag] = sub
        return tag, sub

    def webhook(self, mode: str = "ok") -> tuple[str, str, str]:
        tag = secrets.token_hex(6)
        secret = secrets.token_urlsafe(24)
        self.secrets_by_tag[tag] = secret
        return tag, f"{self.base_url}/webhook/{mode}/{tag}", secret

    def for_tag(self, tag: str) -> list[dict[str, Any]]:
        return [r.payload for r in self.received if r.tag == tag]

    async def wait(self, done: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if self.problems:
                raise AssertionError(f"receiver saw bad requests: {self.problems}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not done within {timeout}s; received {self.received}")
            await asyncio.sleep(0.05)

    # -- the HTTP side ----------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        kind, mode, tag = (request.match_info[k] for k in ("kind", "mode", "tag"))
        body = await request.read()
        self.attempts[tag] = self.attempts.get(tag, 0) + 1
        try:
            payload = (
                self._webpush(tag, request, body)
                if kind == "webpush"
                else self._webhook(tag, request, body)
            )
        except Exception as exc:  # recorded, and the test fails on it
            self.problems.append(f"{kind}/{tag}: {exc!r}")
            return web.Response(status=400)
        if mode == "hang":
            self.hanging.add(tag)
            try:
                await self.release.wait()
            finally:
                self.hanging.discard(tag)
            return web.Response(status=201)
        if mode == "flaky" and self.attempts[tag] == 1:
            return web.Response(status=503)
        if mode == "gone":
            return web.Response(status=410)
        self.received.append(Received(kind, tag, payload, body))
        return web.Response(status=201)

    def _webhook(self, tag: str, request: web.Request, body: bytes) -> dict[str, Any]:
        timestamp = request.headers["X-Messenger-Timestamp"]
        expected = hmac.new(
            self.secrets_by_tag[tag].encode(), f"{timestamp}.".encode() + body, hashlib.sha256
        ).hexdigest()
        if not hmac.compare_digest(request.headers["X-Messenger-Signature"], "sha256=" + expected):
            raise ValueError("bad webhook signature")
        if abs(time.time() - int(timestamp)) > 300:
            raise ValueError("stale timestamp")
        return json.loads(body)

    def _webpush(self, tag: str, request: web.Request, body: bytes) -> dict[str, Any]:
        self._check_vapid(request.headers["Authorization"])
        if request.headers.get("Content-Encoding") != "aes128gcm":
            raise ValueError("payload is not aes128gcm")
        sub = self.subscriptions[tag]
        plain = http_ece.decrypt(
            body, private_key=sub.private_key, auth_secret=sub.auth, version="aes128gcm"
        )
        return json.loads(plain)

    def _check_vapid(self, authorization: str) -> None:
        scheme, _, params = authorization.partition(" ")
        if scheme.lower() != "vapid":
            raise ValueError(f"not a VAPID authorization: {authorization[:20]}")
        fields = dict(part.strip().split("=", 1) for part in params.split(","))
        if fields["k"] != self.vapid_public_key:
            raise ValueError("signed with another key than the server publishes")
        head, claims, signature = fields["t"].split(".")
        raw = unb64url(signature)
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(fields["k"]))
        public.verify(
            encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")),
            f"{head}.{claims}".encode(),
            ec.ECDSA(hashes.SHA256()),
        )
        decoded = json.loads(unb64url(claims))
        if decoded["aud"] != self.base_url or decoded["exp"] < time.time() or "sub" not in decoded:
            raise ValueError(f"bad VAPID claims {decoded}")


async def start_receiver() -> tuple[Receiver, web.AppRunner]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/{kind}/{mode}/{tag}", receiver.handle)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    receiver.base_url = f"http://127.0.0.1:{port}"
    return receiver, runner
