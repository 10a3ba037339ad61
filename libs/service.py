"""The skeleton every service is declared with (docs/services.md).

A service's `app.py` declares `SERVICE = Service(...)`: its name, its settings
class, the resources it opens (Redis, MongoDB and the collections it keeps, the
producer), its own contexts, its consumer loops and (the gateway) its routes.
Declaring does no I/O, and neither does `Service.create_app(settings)`: it makes
an aiohttp application whose cleanup contexts, entered when it starts, open

1. Redis; MongoDB, then the declared collections (with their indexes); the producer;
2. the service's own contexts, in the order declared (repositories, projections,
   periodic jobs: what the handlers need);
3. what `setup` adds (the gateway's route modules and their contexts);
4. the consumer loops, last;

and close in the reverse order, which is the shutdown order of every service
(`libs.lifecycle.serve` on SIGTERM): the consumer loops stop first (each finishes
the batch in hand, publishes its outbox, commits its offsets and leaves its
group), then the service's own contexts close (flushing what they still hold:
notification bursts, sequence counters), then the producer flushes and closes,
then MongoDB and Redis.

`__main__.py` is `serve(SERVICE)` in every service; `lifecycle.serve` loads the
settings class, handles signals, listeners, supervision and exit codes.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, TypeVar

from aiohttp import web

from libs.bus.consumer import BatchHandler, ConsumerLoop, PartitionsCallback
from libs.contracts.envelope import Codec
from libs.lifecycle import (
    MONGO,
    PRODUCER,
    REDIS,
    consumer_context,
    create_base_app,
    mongo_context,
    producer_context,
    redis_context,
)
from libs.settings import ConsumerBatches, ServiceSettings
from libs.storage.mongo import CollectionSpec

S = TypeVar("S", bound=ServiceSettings)

#: A service's own context: an async generator function of (app, settings) (by that
#: name) that opens what it owns before its one `yield` and closes it after.
Context = Callable[[web.Application, S], AsyncIterator[None]]


def static_member_id(settings: ServiceSettings, group: str) -> str | None:
    """This process's static member id in `group` (settings.kafka_static_membership):
    unique among live processes because `serve` binds the HTTP port before any
    consumer starts; None (dynamic membership) when off or the port is not known."""
    if not settings.kafka_static_membership or not settings.http_port:
        return None
    return f"{group}@{socket.gethostname()}:{settings.http_port}"


@dataclass(frozen=True, slots=True)
class Consumer(Generic[S]):
    """One consumer loop: the topics it reads, how they decode, what handles a batch.

    The factories are called with the app and the settings once the resources and
    the service's contexts are open. Batch size, linger and retry backoff come from
    the settings (`ConsumerBatches`); the group is the service's name (namespaced).
    """

    topics: tuple[str, ...]
    codec: Codec
    #: (app, settings) -> the batch handler.
    handler: Callable[[web.Application, S], BatchHandler]
    #: (app, settings) -> what to do with the partitions gained / lost (after the
    #: batch in hand was committed).
    on_assigned: Callable[[web.Application, S], PartitionsCallback] | None = None
    on_revoked: Callable[[web.Application, S], PartitionsCallback] | None = None
    #: The name of its readiness check.
    check: str = "consumer"
    #: Ready only once this member holds partitions (request/reply commands would
    #: otherwise wait out the group's first rebalance).
    ready_when_assigned: bool = False
    #: The consumer group, when not the service's name (a second loop in one service).
    group: str | None = None

    def loop(self, app: web.Application, *, settings: S, group: str) -> ConsumerLoop:
        assert isinstance(settings, ConsumerBatches)
        group_name = settings.consumer_group(self.group or group)
        return ConsumerLoop(
            group=group_name,
            group_instance_id=static_member_id(settings, group_name),
            topics=self.topics,
            codec=self.codec,
            handler=self.handler(app, settings),
            producer=app[PRODUCER],
            bootstrap=settings.kafka_bootstrap_servers,
            namespace=settings.namespace,
            max_batch=settings.batch_max_records,
            linger_ms=settings.batch_linger_ms,
            max_retry_backoff_s=settings.max_retry_backoff_s,
            on_assigned=self.on_assigned(app, settings) if self.on_assigned else None,
            on_revoked=self.on_revoked(app, settings) if self.on_revoked else None,
        )


@dataclass(frozen=True, slots=True)
class Service(Generic[S]):
    """What a service is made of; `create_app` builds it in the one order (module doc)."""

    name: str
    settings: type[S]
    #: The shared resources it opens, named by the app keys they fill: REDIS, MONGO,
    #: PRODUCER (every consumer loop publishes its outbox and dead letters through it).
    resources: tuple[web.AppKey[Any], ...] = ()
    #: Made (with their indexes) on every shard when MongoDB opens.
    collections: Sequence[CollectionSpec] = ()
    producer_linger_ms: int = 0
    contexts: Sequence[Context[S]] = ()
    consumers: Sequence[Consumer[S]] = ()
    #: (app, settings): app state and routes, no I/O; may add contexts of its own.
    setup: Callable[[web.Application, S], None] | None = None
    middlewares: tuple[Any, ...] = ()
    #: settings -> the largest request body, when not aiohttp's 1 MiB.
    client_max_size: Callable[[S], int] | None = None

    def __post_init__(self) -> None:
        unknown = [key for key in self.resources if key not in (REDIS, MONGO, PRODUCER)]
        if unknown:
            raise TypeError(f"{self.name}: no such shared resource: {unknown}")
        if self.collections and MONGO not in self.resources:
            raise TypeError(f"{self.name}: collections are kept on MongoDB: open MONGO")
        if self.consumers and PRODUCER not in self.resources:
            raise TypeError(f"{self.name}: consumer loops publish through the PRODUCER")
        if self.consumers and not issubclass(self.settings, ConsumerBatches):
            raise TypeError(f"{self.name}: a service with consumers has ConsumerBatches settings")

    def create_app(self, settings: S) -> web.Application:
        """The application, its contexts registered in the one order (no I/O here)."""
        app = create_base_app(
            self.name,
            client_max_size=(self.client_max_size(settings) if self.client_max_size else 1024**2),
            middlewares=self.middlewares,
        )
        contexts = app.cleanup_ctx
        if REDIS in self.resources:
            contexts.append(redis_context(REDIS, settings.redis_url))
        if MONGO in self.resources:
            contexts.append(mongo_context(MONGO, settings, self.collections))
        if PRODUCER in self.resources:
            contexts.append(producer_context(PRODUCER, settings, linger_ms=self.producer_linger_ms))
        for own in self.contexts:
            contexts.append(partial(own, settings=settings))
        if self.setup is not None:
            self.setup(app, settings)
        for consumer in self.consumers:
            build = partial(consumer.loop, settings=settings, group=self.name)
            contexts.append(
                consumer_context(
                    build, consumer.check, ready_when_assigned=consumer.ready_when_assigned
                )
            )
        return app
