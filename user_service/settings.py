"""user_service settings (env prefix USER_SERVICE_)."""

from __future__ import annotations

from pydantic import Field

from libs.settings import (
    BatchRecords,
    ConsumerBatches,
    Port,
    ProjectionChecks,
    ServiceSettings,
    service_config,
)


class UserServiceSettings(ServiceSettings, ConsumerBatches, ProjectionChecks):
    model_config = service_config("USER_SERVICE_")

    http_port: Port = 8091
    batch_max_records: BatchRecords = 200
    #: A session unused for this long ends (its Redis key's TTL).
    session_idle_s: int = Field(7 * 24 * 3600, ge=1)
    #: A session ends this long after login, however much it is used.
    session_absolute_s: int = Field(30 * 24 * 3600, ge=1)
    #: argon2id cost (OWASP's minimum: 19 MiB, 2 passes, 1 lane): ~25 ms per hash here.
    argon2_time_cost: int = Field(2, ge=1)
    argon2_memory_kib: int = Field(19 * 1024, ge=8)
    argon2_parallelism: int = Field(1, ge=1)
