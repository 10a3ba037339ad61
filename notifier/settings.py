"""notifier settings (env prefix NOTIFIER_)."""

from __future__ import annotations

from pydantic import Field

from libs.settings import ConsumerBatches, LingerMs, Port, ServiceSettings, service_config


class NotifierSettings(ServiceSettings, ConsumerBatches):
    model_config = service_config("NOTIFIER_")

    http_port: Port = 8096
    batch_linger_ms: LingerMs = 20
    #: Messages to one user in one conversation within this window make one notification.
    coalesce_window_s: float = Field(2.0, ge=0, le=300)
    #: Put the sender and the first characters of the content in the payload (off:
    #: the payload says only which conversation has how many new messages).
    previews: bool = False
    preview_chars: int = Field(100, ge=1, le=1000)
    #: Messages older than this when consumed (a new consumer group reading retained
    #: history, a long outage) notify nobody: their moment has passed.
    max_message_age_s: float = Field(600, gt=0)
    #: One HTTP attempt to a target; a receiver that hangs is cut off after this.
    send_timeout_s: float = Field(10.0, gt=0, le=120)
    #: Attempts per notification and target (network errors, 429, 5xx), with
    #: exponential backoff from backoff_s (doubling, with jitter).
    max_attempts: int = Field(4, ge=1, le=20)
    backoff_s: float = Field(0.5, gt=0, le=60)
    #: Sends in flight at once across all targets.
    max_concurrent_sends: int = Field(100, ge=1, le=10_000)
    #: The VAPID "sub" claim: a contact for push services (RFC 8292).
    vapid_subject: str = "mailto:admin@localhost"
    #: A VAPID private key (PEM or base64url DER) to use instead of the generated one.
    vapid_private_key: str = ""
    #: Seconds a push service keeps an undelivered Web Push message (TTL header).
    webpush_ttl_s: int = Field(3600, ge=0, le=2_419_200)
