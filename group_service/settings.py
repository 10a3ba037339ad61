"""group_service settings (env prefix GROUP_SERVICE_)."""

from __future__ import annotations

from pydantic import Field

from libs.settings import ServiceSettings, service_config


class GroupServiceSettings(ServiceSettings):
    model_config = service_config("GROUP_SERVICE_")

    http_port: int = Field(8092, ge=0, le=65535)
