"""delivery_service settings (env prefix DELIVERY_SERVICE_)."""

from __future__ import annotations

from libs.settings import ConsumerBatches, LingerMs, Port, ServiceSettings, service_config


class DeliveryServiceSettings(ServiceSettings, ConsumerBatches):
    model_config = service_config("DELIVERY_SERVICE_")

    http_port: Port = 8094
    #: A push batch does not wait after its first record: a batch is what arrived while
    #: the last one was handled (natural batching under load), so an idle push waits
    #: for nothing (docs/performance.md, "what the lingers cost").
    batch_linger_ms: LingerMs = 0
