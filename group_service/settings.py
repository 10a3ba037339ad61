"""group_service settings (env prefix GROUP_SERVICE_)."""

from __future__ import annotations

from pydantic import Field

from libs.contracts.groups import GROUP_SIZE_DEFAULT
from libs.settings import (
    BatchRecords,
    ConsumerBatches,
    Port,
    ProjectionChecks,
    ServiceSettings,
    service_config,
)


class GroupServiceSettings(ServiceSettings, ConsumerBatches, ProjectionChecks):
    model_config = service_config("GROUP_SERVICE_")

    http_port: Port = 8092
    batch_max_records: BatchRecords = 200
    #: Most members a group may have, its owner included (a full group answers 409).
    max_group_size: int = Field(GROUP_SIZE_DEFAULT, ge=2, le=1_000_000)
