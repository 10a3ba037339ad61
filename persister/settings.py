"""persister settings (env prefix PERSISTER_)."""

from __future__ import annotations

from pydantic import Field

from libs.settings import ServiceSettings, service_config


class PersisterSettings(ServiceSettings):
    model_config = service_config("PERSISTER_")

    http_port: int = Field(8095, ge=0, le=65535)
    #: Flush at this many messages (one unordered insert per shard per flush).
    #: See docs/storage.md for the measurement behind the default.
    batch_max_records: int = Field(500, ge=1, le=20_000)
    #: ...or this long after the first message of a batch, whichever comes first.
    batch_linger_ms: float = Field(25, ge=0, le=10_000)
    #: Ceiling of the retry backoff while a shard is down (the batch is retried,
    #: its offsets stay uncommitted).
    max_retry_backoff_s: float = Field(5.0, gt=0, le=60)
