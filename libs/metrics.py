"""Prometheus metrics shared by every service, and the /metrics exposition.

One process-wide registry (prometheus_client's default). Metrics that belong to
one service are declared in that service's module; these are the ones the shared
machinery (bus, HTTP, storage) updates.
"""

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

RECORDS_CONSUMED = Counter(
    "messenger_records_consumed_total", "Kafka records decoded and handled", ["group", "topic"]
)
RECORDS_DEAD_LETTERED = Counter(
    "messenger_records_dead_lettered_total", "Undecodable records sent to a DLQ", ["group", "topic"]
)
BATCH_FAILURES = Counter(
    "messenger_batch_failures_total", "Batches whose handler raised (redelivered)", ["group"]
)
BATCH_SECONDS = Histogram(
    "messenger_batch_seconds",
    "Time to handle, publish and commit one batch",
    ["group"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
BATCH_SIZE = Histogram(
    "messenger_batch_records",
    "Records per consumed batch",
    ["group"],
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500),
)
REQUEST_SECONDS = Histogram(
    "messenger_http_request_seconds",
    "HTTP request latency",
    ["route", "method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


def exposition() -> tuple[bytes, str]:
    """The current metrics in the Prometheus text format, with its content type."""
    return generate_latest(), CONTENT_TYPE_LATEST
