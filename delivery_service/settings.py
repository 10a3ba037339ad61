"""delivery_service settings (env prefix DELIVERY_SERVICE_)."""

from __future__ import annotations

from pydantic import Field

from libs.settings import ServiceSettings, service_config


class DeliveryServiceSettings(ServiceSettings):
    model_config = service_config("DELIVERY_SERVICE_")

    http_port: int = Field(8094, ge=0, le=65535)
    #: A push batch: up to this many records...
    max_batch: int = Field(500, ge=1, le=10_000)
    #: ...or this long after the first one. 0: a batch is what arrived while the last
    #: one was handled (natural batching under load), so an idle push waits for nothing.
    linger_ms: float = Field(0, ge=0, le=1000)
