"""message_service settings (env prefix MESSAGE_SERVICE_)."""

from __future__ import annotations

from pydantic import Field

from libs.settings import ConsumerBatches, Port, ServiceSettings, service_config


class MessageServiceSettings(ServiceSettings, ConsumerBatches):
    """Batches of ConsumerBatches' defaults: 500 commands, no linger (a send's latency
    is its batch's; under load batches fill up by themselves)."""

    model_config = service_config("MESSAGE_SERVICE_")

    http_port: Port = 8093
    #: Newest messages kept per conversation in the Redis history cache.
    recent_per_conversation: int = Field(200, ge=10, le=10_000)
    #: Newest messages kept per receiver (inbox or group log) for sync.
    recent_per_receiver: int = Field(200, ge=10, le=10_000)
    #: An idle conversation's cache expires after this long (bounds Redis memory).
    recent_ttl_s: int = Field(7 * 24 * 3600, ge=60)
    #: Sequence counters are written at most this often (and when partitions move or
    #: the service stops); after a crash the ledger probe walks what they missed.
    #: 0 = after every batch.
    counter_interval_s: float = Field(5.0, ge=0, le=300)
    #: Dedupe keys remembered in memory (retries answered without MongoDB).
    dedupe_memory: int = Field(20_000, ge=0)
    #: How long after sending its sender may edit a message (MESSAGE_SERVICE_EDIT_WINDOW_S).
    edit_window_s: float = Field(48 * 3600, ge=0)
