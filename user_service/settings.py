"""user_service settings (env prefix USER_SERVICE_)."""

from __future__ import annotations

from pydantic import Field

from libs.settings import ServiceSettings, service_config


class UserServiceSettings(ServiceSettings):
    model_config = service_config("USER_SERVICE_")

    http_port: int = Field(8091, ge=0, le=65535)
