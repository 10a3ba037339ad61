"""Gateway settings (env prefix GATEWAY_), read once at start.

`GatewaySettings` is the gateway's one settings class; its rate limits
(GATEWAY_RATE_*) and WebSocket settings (GATEWAY_WS_*) are sections of it, read
from their own prefixes when it is loaded, so a bad value there is reported at
start like any other.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode

from libs.contracts.messages import CONTENT_MAX_CHARS
from libs.ids import new_id
from libs.media.settings import MediaSettings
from libs.settings import Port, ServiceSettings, service_config


class RateLimitSettings(BaseSettings):
    """Env GATEWAY_RATE_*.

    Per-username limits stop password guessing against one account. Per-address
    limits only stop floods: many users share one address (NAT, the test suite,
    a load generator), and one argon2id hash per request already caps a core at
    ~40 a second. Load tests that register or log in thousands of users from one
    address raise GATEWAY_RATE_*_PER_IP_*.
    """

    model_config = service_config("GATEWAY_RATE_")

    login_per_ip_per_minute: float = Field(3000, gt=0)
    login_per_ip_burst: int = Field(1000, ge=1)
    login_failures_per_ip_per_minute: float = Field(30, gt=0)
    login_failures_per_ip_burst: int = Field(60, ge=1)
    login_failures_per_account_ip_per_minute: float = Field(10, gt=0)
    login_failures_per_account_ip_burst: int = Field(20, ge=1)
    register_per_ip_per_minute: float = Field(1200, gt=0)
    register_per_ip_burst: int = Field(1000, ge=1)
    register_per_username_per_minute: float = Field(5, gt=0)
    register_per_username_burst: int = Field(10, ge=1)
    #: Per authenticated user. A person types far slower; bots and load tests raise them.
    send_per_user_per_minute: float = Field(600, gt=0)
    send_per_user_burst: int = Field(100, ge=1)
    group_changes_per_user_per_minute: float = Field(60, gt=0)
    group_changes_per_user_burst: int = Field(60, ge=1)
    read_marks_per_user_per_minute: float = Field(1200, gt=0)
    read_marks_per_user_burst: int = Field(200, ge=1)
    uploads_per_user_per_minute: float = Field(60, gt=0)
    uploads_per_user_burst: int = Field(30, ge=1)
    #: Proxies (addresses or CIDRs, comma-separated) whose X-Forwarded-For is believed,
    #: e.g. the load balancer in front of the gateways. Empty: the peer address counts.
    trusted_proxies: Annotated[tuple[IPv4Network | IPv6Network, ...], NoDecode] = ()

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(ip_network(p.strip(), strict=False) for p in value.split(",") if p.strip())
        return value


class RealtimeSettings(BaseSettings):
    """WebSocket settings of the gateway (env prefix GATEWAY_WS_)."""

    model_config = service_config("GATEWAY_WS_")

    #: Comma-separated origins a browser may open a socket from (requests without an
    #: Origin header, i.e. non-browser clients, are allowed).
    allowed_origins: str = "http://localhost:3000,http://127.0.0.1:3000"
    heartbeat_s: float = Field(20.0, gt=0)
    max_frame_bytes: int = Field(64 * 1024, ge=1024)
    send_queue_frames: int = Field(1024, ge=1)
    #: Devices and browser tabs of one user, across every gateway instance.
    max_connections_per_user: int = Field(32, ge=1)
    #: Kernel send buffer of each socket (0: the OS autotunes it, up to megabytes
    #: on loopback). Bounded, it caps memory per connection and lets a client that
    #: stopped reading fill its send queue, and be closed, after little data.
    socket_send_buffer_bytes: int = Field(128 * 1024, ge=0)
    #: Accept permessage-deflate when the client offers it (browsers do). Off by
    #: default: each compressed socket keeps a zlib compressor from its first frame,
    #: measured at 89 KB per idle socket against 18.5 without (docs/realtime.md),
    #: and compresses every frame; chat frames are a few hundred bytes.
    compression: bool = False
    ticket_ttl_s: int = Field(30, ge=1, le=600)
    #: How often open sockets are checked against their session's absolute expiry
    #: (locally). Revocations close sockets when announced (session_revocations).
    session_check_s: float = Field(0.5, gt=0)
    #: How often the sessions of open sockets are re-read from Redis: the backstop
    #: for an announcement missed (it is also done after every resubscription).
    session_poll_s: float = Field(15.0, gt=0)
    registry_refresh_s: float = Field(10.0, gt=0)

    @property
    def origins(self) -> frozenset[str]:
        return frozenset(
            o.strip().rstrip("/") for o in self.allowed_origins.split(",") if o.strip()
        )


class GatewaySettings(ServiceSettings, MediaSettings):
    model_config = service_config("GATEWAY_")

    http_port: Port = 8080
    #: /metrics is never on the public API port (GATEWAY_METRICS_PORT, GATEWAY_METRICS_HOST).
    metrics_port: int | None = Field(9080, ge=0, le=65535)
    #: Names this instance's reply topic and push channel; unique per running gateway.
    instance_id: str = Field(
        default_factory=lambda: "gw-" + new_id()[-12:], pattern=r"^[A-Za-z0-9_.-]{1,64}$"
    )
    request_timeout_s: float = Field(10.0, gt=0, le=120)
    #: How long a checked session is trusted without asking Redis again (0 = never);
    #: at most 1 s, the bound on a revocation made through another instance.
    auth_cache_s: float = Field(1.0, ge=0, le=1.0)
    max_body_bytes: int = Field(64 * 1024, ge=1024)
    #: A request body must arrive whole within this many seconds of its headers.
    body_timeout_s: float = Field(15.0, gt=0, le=3600)
    #: Longest message content, in characters after trimming (GATEWAY_MESSAGE_MAX_CHARS).
    message_max_chars: int = Field(CONTENT_MAX_CHARS, ge=1, le=CONTENT_MAX_CHARS)
    # -- attachments (docs/media.md) --
    #: Largest upload, in bytes (GATEWAY_ATTACHMENT_MAX_BYTES); past it, 413.
    attachment_max_bytes: int = Field(25 * 1024 * 1024, ge=1)
    #: An upload no message references is deleted after this long.
    attachment_unreferenced_ttl_s: float = Field(24 * 3600, ge=0)
    #: How often one gateway (under a Redis lock) collects unreferenced uploads.
    attachment_collect_interval_s: float = Field(600, gt=0)
    thumbnail_max_side: int = Field(320, ge=16, le=2048)
    #: Images with a bigger canvas are refused before any pixel is decoded.
    image_max_pixels: int = Field(40_000_000, ge=1)
    # -- push targets (docs/notifications.md) --
    push_targets_per_user: int = Field(20, ge=1, le=1000)
    #: Accept http:// and loopback or private addresses as push endpoints and webhook
    #: URLs (local development and tests only: otherwise a user could make the
    #: notifier call services inside the network).
    push_targets_allow_insecure: bool = False
    # -- sections with prefixes of their own --
    #: GATEWAY_RATE_* (gateway/ratelimit.py).
    rate_limits: RateLimitSettings = Field(default_factory=RateLimitSettings)
    #: GATEWAY_WS_* (gateway/sockets.py, docs/realtime.md).
    realtime: RealtimeSettings = Field(default_factory=RealtimeSettings)
