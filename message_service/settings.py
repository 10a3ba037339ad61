"""message_service settings (env prefix MESSAGE_SERVICE_)."""

from __future__ import annotations

from pydantic import Field

from libs.settings import ServiceSettings, service_config


class MessageServiceSettings(ServiceSettings):
    model_config = service_config("MESSAGE_SERVICE_")

    http_port: int = Field(8093, ge=0, le=65535)
