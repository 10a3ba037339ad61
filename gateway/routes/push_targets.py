"""Gateway endpoints: push targets (issue 18): where the notifier reaches an offline user.

A target is a browser's Web Push subscription (RFC 8030/8291/8292; the server's
VAPID public key is at GET /v1/push-targets/vapid-key) or a webhook whose POSTs
are signed with HMAC-SHA256 over "<timestamp>.<body>". Stored by
libs.push_targets; what the notifier sends is in docs/notifications.md. Unless
GATEWAY_PUSH_TARGETS_ALLOW_INSECURE is set, endpoints must be https and must not
name a loopback, private or link-local address, so a user cannot point the
notifier at services inside the network.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Literal
from urllib.parse import urlsplit

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from gateway.api import Routes
from gateway.auth import Principal
from gateway.keys import MONGO, SETTINGS
from gateway.settings import GatewaySettings
from libs.errors import Conflict, Invalid, NotFound
from libs.push_targets import PushTargets, VapidKeys, b64url_decode

routes = Routes(tag="push-targets")

TARGETS = web.AppKey("push_targets", PushTargets)
VAPID = web.AppKey("vapid_keys", VapidKeys)


def setup(app: web.Application, settings: GatewaySettings) -> None:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        app[TARGETS] = PushTargets(app[MONGO])
        app[VAPID] = VapidKeys(app[MONGO])
        yield

    app.cleanup_ctx.append(ctx)


class SubscriptionKeys(BaseModel):
    model_config = ConfigDict(extra="forbid")

    p256dh: str = Field(min_length=80, max_length=100, description="base64url P-256 point")
    auth: str = Field(min_length=16, max_length=32, description="base64url 16-byte secret")


class Subscription(BaseModel):
    """A browser's PushSubscription.toJSON() (expirationTime is ignored)."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str = Field(min_length=8, max_length=2048)
    expirationTime: int | None = None
    keys: SubscriptionKeys


class WebPushBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["webpush"]
    subscription: Subscription


class WebhookBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["webhook"]
    url: str = Field(min_length=8, max_length=2048)
    secret: str = Field(min_length=16, max_length=256, description="HMAC-SHA256 key")


class PushTargetBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: Annotated[WebPushBody | WebhookBody, Field(discriminator="kind")]


class PushTargetView(BaseModel):
    """A target as its owner sees it (never the webhook secret nor the subscription keys)."""

    id: str
    kind: Literal["webpush", "webhook"]
    created_at: datetime
    endpoint: str | None = None
    url: str | None = None


class PushTargetList(BaseModel):
    items: list[PushTargetView]


class VapidKey(BaseModel):
    #: The applicationServerKey for PushManager.subscribe (base64url, uncompressed P-256).
    public_key: str


def _view(target: dict) -> PushTargetView:  # type: ignore[type-arg]
    return PushTargetView(
        id=target["id"],
        kind=target["kind"],
        created_at=target["created_at"],
        endpoint=target.get("endpoint"),
        url=target.get("url"),
    )


def check_address(url: str, allow_insecure: bool) -> None:
    """422 unless `url` is an absolute http(s) URL this deployment may call."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        _ = parts.port
    except ValueError:
        raise Invalid("the URL is malformed", code="invalid_target") from None
    if parts.scheme not in ("https", "http") or not host or parts.username or parts.password:
        raise Invalid("give an absolute https URL without credentials", code="invalid_target")
    if allow_insecure:
        return
    if parts.scheme != "https":
        raise Invalid("push endpoints must use https", code="invalid_target")
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        raise Invalid("the URL names a local host", code="invalid_target")
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return
    if not address.is_global:
        raise Invalid("the URL names a non-public address", code="invalid_target")


def _check_keys(keys: SubscriptionKeys) -> None:
    try:
        point, secret = b64url_decode(keys.p256dh), b64url_decode(keys.auth)
    except ValueError:
        raise Invalid("the subscription keys are not base64url", code="invalid_target") from None
    if len(point) != 65 or point[0] != 4 or len(secret) != 16:
        raise Invalid(
            "p256dh must be an uncompressed P-256 point and auth 16 bytes",
            code="invalid_target",
        )


@routes.get(
    "/v1/push-targets/vapid-key",
    response=VapidKey,
    auth=False,
    summary="The server's VAPID public key (applicationServerKey for Web Push)",
)
async def vapid_key(request: web.Request) -> VapidKey:
    return VapidKey(public_key=await request.app[VAPID].public_key())


@routes.post(
    "/v1/push-targets",
    body=PushTargetBody,
    response=PushTargetView,
    status=201,
    summary="Register a Web Push subscription or a webhook for the caller",
    errors=(409,),
)
async def add_push_target(
    request: web.Request, principal: Principal, body: PushTargetBody
) -> PushTargetView:
    """Registering the same endpoint or URL again replaces it (same id). The notifier
    calls a target only while the user has no connected socket."""
    settings = request.app[SETTINGS]
    targets = request.app[TARGETS]
    target = body.target
    address = target.subscription.endpoint if isinstance(target, WebPushBody) else target.url
    check_address(address, settings.push_targets_allow_insecure)
    existing = await targets.list(principal.user_id)
    replacing = any(t.get("endpoint", t.get("url")) == address for t in existing)
    if not replacing and len(existing) >= settings.push_targets_per_user:
        raise Conflict(
            f"a user has at most {settings.push_targets_per_user} push targets",
            code="too_many_push_targets",
        )
    if isinstance(target, WebPushBody):
        _check_keys(target.subscription.keys)
        stored = await targets.add_webpush(
            principal.user_id,
            target.subscription.endpoint,
            target.subscription.keys.p256dh,
            target.subscription.keys.auth,
        )
    else:
        stored = await targets.add_webhook(principal.user_id, target.url, target.secret)
    return _view(stored)


@routes.get("/v1/push-targets", response=PushTargetList, summary="The caller's push targets")
async def list_push_targets(request: web.Request, principal: Principal) -> PushTargetList:
    return PushTargetList(
        items=[_view(t) for t in await request.app[TARGETS].list(principal.user_id)]
    )


@routes.delete(
    "/v1/push-targets/{target_id}",
    status=204,
    summary="Remove one of the caller's push targets",
    errors=(404,),
)
async def remove_push_target(request: web.Request, principal: Principal) -> None:
    target = request.match_info["target_id"]
    if not (target.isalnum() and len(target) <= 64):
        raise NotFound("no such push target", code="push_target_not_found")
    if not await request.app[TARGETS].remove(principal.user_id, target):
        raise NotFound("no such push target", code="push_target_not_found")
