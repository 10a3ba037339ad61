"""Calling push targets: Web Push (pywebpush: RFC 8291 encryption, RFC 8292 VAPID) and
signed webhooks, each attempt bounded by a timeout, retried with backoff.

Outcomes: `delivered` (2xx), `gone` (404 or 410: the subscription or hook no longer
exists; the caller removes the target), `failed` (another 4xx, or the attempts
ran out on network errors, timeouts, 429 and 5xx). Every send runs in the
caller's task; the caller runs one task per target, so a receiver that hangs
holds only its own send, never another target's nor socket delivery (which is
delivery_service's, another process).

Webhook signature (like the Matrix push gateways' and Stripe's): the POST carries
`X-Messenger-Timestamp: <unix seconds>` and
`X-Messenger-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>`;
a receiver recomputes it over the raw body and rejects old timestamps (replays).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import time
from enum import Enum
from typing import Any

import aiohttp
import orjson
from prometheus_client import Counter
from py_vapid import Vapid
from pywebpush import WebPushException, webpush_async

from libs.logging import get_logger

log = get_logger(__name__)

ATTEMPTS = Counter(
    "messenger_notifier_attempts_total", "HTTP attempts to push targets", ["kind", "result"]
)

SIGNATURE_HEADER = "X-Messenger-Signature"
TIMESTAMP_HEADER = "X-Messenger-Timestamp"


class Outcome(Enum):
    DELIVERED = "delivered"
    GONE = "gone"
    FAILED = "failed"


class _Retry(Exception):
    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _classify(status: int, retry_after: str | None) -> Outcome:
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status in (404, 410):
        return Outcome.GONE
    if status == 429 or status >= 500 or status == 408:
        after = None
        if retry_after and retry_after.isdigit():
            after = float(retry_after)
        raise _Retry(f"HTTP {status}", after)
    return Outcome.FAILED


class TargetSender:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        vapid: Vapid,
        *,
        vapid_subject: str,
        timeout_s: float,
        max_attempts: int,
        backoff_s: float,
        webpush_ttl_s: int,
        max_concurrent: int,
    ) -> None:
        self.session = session
        self.vapid = vapid
        self.vapid_subject = vapid_subject
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.webpush_ttl_s = webpush_ttl_s
        self._slots = asyncio.Semaphore(max_concurrent)

    async def send(self, target: dict[str, Any], body: bytes) -> Outcome:
        """Deliver `body` to `target`, retrying what may pass later."""
        kind = target["kind"]
        for attempt in range(1, self.max_attempts + 1):
            try:
                async with self._slots:
                    if kind == "webpush":
                        outcome = await self._webpush(target, body)
                    else:
                        outcome = await self._webhook(target, body)
                ATTEMPTS.labels(kind, outcome.value).inc()
                return outcome
            except (_Retry, aiohttp.ClientError, TimeoutError) as exc:
                ATTEMPTS.labels(kind, "retry").inc()
                if attempt == self.max_attempts:
                    log.warning(
                        "push target failed", target_id=target["id"], kind=kind, error=repr(exc)
                    )
                    return Outcome.FAILED
                delay = self.backoff_s * 2 ** (attempt - 1) * (0.5 + random.random())
                if isinstance(exc, _Retry) and exc.retry_after_s is not None:
                    delay = max(delay, min(exc.retry_after_s, 60.0))
                await asyncio.sleep(delay)
        return Outcome.FAILED

    async def _webhook(self, target: dict[str, Any], body: bytes) -> Outcome:
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(target["secret"], timestamp, body),
        }
        async with self.session.post(
            target["url"], data=body, headers=headers, timeout=self.timeout, allow_redirects=False
        ) as response:
            await response.read()
            return _classify(response.status, response.headers.get("Retry-After"))

    async def _webpush(self, target: dict[str, Any], body: bytes) -> Outcome:
        subscription = {
            "endpoint": target["endpoint"],
            "keys": {"p256dh": target["p256dh"], "auth": target["auth"]},
        }
        try:
            response = await webpush_async(
                subscription,
                data=body.decode(),
                vapid_private_key=self.vapid,
                vapid_claims={"sub": self.vapid_subject},  # a fresh dict: the call fills it
                ttl=self.webpush_ttl_s,
                timeout=self.timeout,  # type: ignore[arg-type]
                aiohttp_session=self.session,
            )
        except WebPushException as exc:
            status = exc.response.status if exc.response is not None else 0
            if not status:
                raise _Retry(str(exc)) from None
            headers = getattr(exc.response, "headers", {}) or {}
            return _classify(status, headers.get("Retry-After"))
        assert not isinstance(response, str)
        response.release()
        return _classify(response.status, response.headers.get("Retry-After"))


def encode(payload: dict[str, Any]) -> bytes:
    return orjson.dumps(payload)
