"""Gateway settings (env prefix GATEWAY_)."""

from __future__ import annotations

from pydantic import Field

from libs.contracts.messages import CONTENT_MAX_CHARS
from libs.ids import new_id
from libs.media.settings import MediaSettings
from libs.settings import ServiceSettings, service_config


class GatewaySettings(ServiceSettings, MediaSettings):
    model_config = service_config("GATEWAY_")

    http_port: int = Field(8080, ge=0, le=65535)
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
