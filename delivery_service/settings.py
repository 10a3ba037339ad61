"""delivery_service settings (env prefix DELIVERY_SERVICE_)."""

from __future__ import annotations

from pydantic import Field

from libs.settings import ServiceSettings, service_config


class DeliveryServiceSettings(ServiceSettings):
    model_config = service_config("DELIVERY_SERVICE_")

    http_port: int = Field(8094, ge=0, le=65535)
