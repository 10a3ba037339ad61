"""persister settings (env prefix PERSISTER_)."""

from __future__ import annotations

from pydantic import Field

from libs.settings import ServiceSettings, service_config


class PersisterSettings(ServiceSettings):
    model_config = service_config("PERSISTER_")

    http_port: int = Field(8095, ge=0, le=65535)
