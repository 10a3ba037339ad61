"""persister settings (env prefix PERSISTER_)."""

from __future__ import annotations

from libs.settings import ConsumerBatches, LingerMs, Port, ServiceSettings, service_config


class PersisterSettings(ServiceSettings, ConsumerBatches):
    """Flushes at 500 messages (ConsumerBatches' default; one unordered insert per
    shard per flush) or 25 ms after a batch's first, whichever comes first. See
    docs/storage.md for the measurement behind the defaults."""

    model_config = service_config("PERSISTER_")

    http_port: Port = 8095
    batch_linger_ms: LingerMs = 25
