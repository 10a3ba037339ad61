"""How every service process starts, reports health, and stops.

Each service is an aiohttp application built by its `create_app(settings)`:
resources are opened and closed in `cleanup_ctx` entries made here (Redis,
MongoDB shards, the producer, consumer loops), each registering a readiness
check. `/healthz` says the process is alive, `/readyz` answers 503 until every
check passes, `/metrics` is Prometheus: on the HTTP port, or on a listener of its
own when the service's `metrics_port` is set (the gateway's default: its API
port is public).

`serve()` runs the app: SIGTERM or SIGINT stops the consumers first (they finish
and commit the batch in hand), then flushes the producer, then closes clients,
the reverse of opening. A bad configuration, an unreachable dependency at start
or a port in use ends the process with one line on stderr and exit code 2.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

from libs.bus.consumer import ConsumerLoop
from libs.bus.producer import Producer
from libs.http_server import ServiceRunner
from libs.logging import configure_logging, get_logger
from libs.metrics import exposition
from libs.settings import ConfigurationError, ServiceSettings
from libs.storage.mongo import MongoShards, open_shards

log = get_logger(__name__)

ReadinessCheck = Callable[[], Awaitable[bool]]
#: The shared resources every service may open, filled by the contexts below.
REDIS = web.AppKey("redis", Redis)
MONGO = web.AppKey("mongo", MongoShards)
PRODUCER = web.AppKey("producer", Producer)
READINESS = web.AppKey("readiness", dict[str, ReadinessCheck])
SERVICE_NAME = web.AppKey("service_name", str)
STARTED_AT = web.AppKey("started_at", float)


def create_base_app(
    name: str, *, client_max_size: int = 1024**2, middlewares: tuple[Any, ...] = ()
) -> web.Application:
    """An application with /healthz and /readyz and an empty readiness table (`serve()`
    adds /metrics, here or on a listener of its own)."""
    app = web.Application(client_max_size=client_max_size, middlewares=middlewares)
    app[SERVICE_NAME] = name
    app[READINESS] = {}
    app[STARTED_AT] = time.time()
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    return app


def add_readiness_check(app: web.Application, name: str, check: ReadinessCheck) -> None:
    app[READINESS][name] = check


async def _healthz(request: web.Request) -> web.Response:
    app = request.app
    return web.json_response(
        {
            "status": "ok",
            "service": app[SERVICE_NAME],
            "uptime_s": round(time.time() - app[STARTED_AT], 1),
        }
    )


async def _readyz(request: web.Request) -> web.Response:
    checks = request.app[READINESS]

    async def run(check: ReadinessCheck) -> bool:
        try:
            return bool(await asyncio.wait_for(check(), 2.0))
        except Exception:
            return False

    results = await asyncio.gather(*(run(c) for c in checks.values()))
    status = dict(zip(checks, results, strict=True))
    ready = all(results)
    return web.json_response({"ready": ready, "checks": status}, status=200 if ready else 503)


async def _metrics(request: web.Request) -> web.Response:
    body, content_type = exposition()
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


# -- resources, each opened and closed in one place ---------------------------------


def redis_context(
    key: web.AppKey[Redis], url: str
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        # A blocking pool: past 200 connections a command waits (up to 5 s) for a
        # free one instead of failing at once with MaxConnectionsError, which is
        # what a burst of WebSocket handshakes met with the default pool.
        pool = BlockingConnectionPool.from_url(
            url,
            decode_responses=True,
            health_check_interval=10,
            socket_connect_timeout=3,
            socket_timeout=5,
            max_connections=200,
            timeout=5,
        )
        client = Redis.from_pool(pool)
        app[key] = client

        async def ready() -> bool:
            try:
                return bool(await client.ping())
            except RedisError:
                return False

        add_readiness_check(app, "redis", ready)
        try:
            yield
        finally:
            await client.aclose()

    return ctx


def mongo_context(
    key: web.AppKey[MongoShards], settings: ServiceSettings
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        shards = open_shards(
            settings.mongo_shards, settings.database_name, settings.mongo_shards_sql
        )
        app[key] = shards

        async def ready() -> bool:
            return all(await shards.ping())

        add_readiness_check(app, "mongo", ready)
        try:
            yield
        finally:
            await shards.close()

    return ctx


def producer_context(
    key: web.AppKey[Producer], settings: ServiceSettings, *, linger_ms: int = 0
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        producer = Producer(
            settings.kafka_bootstrap_servers,
            settings.namespace,
            linger_ms=linger_ms,
            client_id=app[SERVICE_NAME],
        )
        await producer.start(timeout_s=settings.kafka_connect_timeout_s)
        app[key] = producer

        async def ready() -> bool:
            return producer.started

        add_readiness_check(app, "kafka_producer", ready)
        try:
            yield
        finally:
            await producer.stop()

    return ctx


def consumer_context(
    build: Callable[[web.Application], ConsumerLoop], name: str = "consumer"
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Start a consumer loop after the resources it needs, stop it before them.

    Register it after the producer and storage contexts: cleanup runs in reverse,
    so on SIGTERM the loop stops (finishing and committing its batch) first.
    """

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        loop = build(app)
        await loop.start()

        async def ready() -> bool:
            return loop.running and loop.healthy

        add_readiness_check(app, name, ready)
        try:
            yield
        finally:
            await loop.stop()

    return ctx


# -- running ---------------------------------------------------------------------------


def serve(
    service: str,
    settings_loader: Callable[[], ServiceSettings],
    app_factory: Callable[[Any], Awaitable[web.Application] | web.Application],
) -> None:
    """Entry point of `python -m <service>`: run until SIGTERM/SIGINT, then shut down."""
    try:
        settings = settings_loader()
    except ConfigurationError as exc:
        print(f"{service}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(service, settings.log_level)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a pinned dependency
        pass
    try:
        asyncio.run(_serve(service, settings, app_factory))
    except ConfigurationError as exc:
        print(f"{service}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        pass


async def _serve(
    service: str,
    settings: ServiceSettings,
    app_factory: Callable[[Any], Awaitable[web.Application] | web.Application],
) -> None:
    built = app_factory(settings)
    app = await built if asyncio.iscoroutine(built) else built
    assert isinstance(app, web.Application)
    metrics_runner: web.AppRunner | None = None
    if settings.metrics_port is None:
        app.router.add_get("/metrics", _metrics)
    else:
        metrics_app = web.Application()
        metrics_app.router.add_get("/metrics", _metrics)
        metrics_runner = ServiceRunner(
            metrics_app, header_timeout_s=settings.http_header_timeout_s, access_log=None
        )
    runner = ServiceRunner(
        app,
        header_timeout_s=settings.http_header_timeout_s,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=settings.shutdown_grace_seconds,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await runner.setup()  # runs on_startup and enters every cleanup_ctx
    except ConfigurationError:
        await runner.cleanup()
        raise
    except OSError as exc:
        await runner.cleanup()
        raise ConfigurationError(f"a dependency is unreachable at start: {exc}") from None
    site = web.TCPSite(runner, settings.http_host, settings.http_port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigurationError(
            f"cannot listen on {settings.http_host}:{settings.http_port}: {exc.strerror or exc}"
        ) from None
    if metrics_runner is not None:
        await metrics_runner.setup()
        metrics_site = web.TCPSite(metrics_runner, settings.metrics_host, settings.metrics_port)
        try:
            await metrics_site.start()
        except OSError as exc:
            await metrics_runner.cleanup()
            await runner.cleanup()
            raise ConfigurationError(
                f"cannot serve metrics on {settings.metrics_host}:{settings.metrics_port}: "
                f"{exc.strerror or exc}"
            ) from None
    sites = [site] if metrics_runner is None else [site, *metrics_runner.sites]
    bound = [
        sock.getsockname()
        for one in sites
        for sock in (one._server.sockets if one._server else [])  # type: ignore[union-attr]
    ]
    log.info("service started", service=service, listening=[f"{h}:{p}" for h, p, *_ in bound])
    await stop.wait()
    log.info("service stopping", service=service)
    if metrics_runner is not None:
        await metrics_runner.cleanup()
    try:
        await runner.cleanup()  # on_shutdown, then cleanup_ctx exits in reverse order
    except Exception:
        log.exception("error during shutdown", service=service)
    log.info("service stopped", service=service)
