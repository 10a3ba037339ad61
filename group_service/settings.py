"""group_service settings (env prefix GROUP_SERVICE_)."""

from __future__ import annotations

from pydantic import Field

from libs.contracts.groups import GROUP_SIZE_DEFAULT
from libs.settings import ServiceSettings, service_config


class GroupServiceSettings(ServiceSettings):
    model_config = service_config("GROUP_SERVICE_")

    http_port: int = Field(8092, ge=0, le=65535)
    #: Most members a group may have, its owner included (a full group answers 409).
    max_group_size: int = Field(GROUP_SIZE_DEFAULT, ge=2, le=1_000_000)
    #: How often the projection sentinel is checked (a missing one triggers a rebuild).
    projection_check_interval_s: float = Field(1.0, gt=0, le=60)
