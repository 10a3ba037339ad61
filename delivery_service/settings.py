"""delivery_service settings (env prefix DELIVERY_SERVICE_)."""

from __future__ import annotations

from libs.settings import ConsumerBatches, LingerMs, Port, ServiceSettings, service_config


class DeliveryServiceSettings(ServiceSettings, ConsumerBatches):
    model_config = service_config("DELIVERY_SERVICE_")

    http_port: Port = 8094
    #: A push batch waits up to 5 ms after its first record: a burst's fan-out goes out
    #: in one batch.
    batch_linger_ms: LingerMs = 5
