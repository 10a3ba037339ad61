"""How every service process starts, reports health, is supervised, and stops.

Each service is an aiohttp application built from its declaration
(libs/service.py, docs/services.md): resources are opened and closed in
`cleanup_ctx` entries made here (Redis, MongoDB shards with their collections,
the producer, consumer loops, periodic jobs), each registering a readiness
check. `/healthz` says the process is alive, `/readyz` answers 503 until every
check passes, `/metrics` is Prometheus: on the HTTP port, or on a listener of its
own when the service's `metrics_port` is set (the gateway's default: its API
port is public).

`serve()` runs a service: SIGTERM or SIGINT stops the consumers first (each
finishes, publishes and commits the batch in hand), then closes the service's
own contexts (flushing what they hold), then flushes the producer, then closes
clients, the reverse of opening. The `Supervisor` watches the tasks a service
cannot work without (consumer loops, periodic jobs): one that ends unasked
stops the process the same graceful way with exit code 1, so that whatever
supervises processes (deploy/local/supervise.py, compose, Kubernetes) starts it
again. A bad configuration, an unreachable dependency at start or a port in use
ends the process with one line on stderr and exit code 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from aiohttp import web
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

from libs.bus.consumer import ConsumerLoop
from libs.bus.producer import Producer
from libs.http_server import ServiceRunner
from libs.logging import configure_logging, get_logger
from libs.metrics import exposition
from libs.settings import ConfigurationError, ServiceSettings, load_settings
from libs.storage.mongo import CollectionSpec, MongoShards, bootstrap_collections, open_shards
from libs.storage.redis_packing import with_hiredis_packing

if TYPE_CHECKING:
    from libs.service import Service

log = get_logger(__name__)

ReadinessCheck = Callable[[], Awaitable[bool]]
#: The shared resources every service may open, filled by the contexts below.
REDIS = web.AppKey("redis", Redis)
MONGO = web.AppKey("mongo", MongoShards)
PRODUCER = web.AppKey("producer", Producer)
READINESS = web.AppKey("readiness", dict[str, ReadinessCheck])
SERVICE_NAME = web.AppKey("service_name", str)
STARTED_AT = web.AppKey("started_at", float)


class Supervisor:
    """The one way a service process stops, and the tasks it cannot work without.

    `stop()` (SIGTERM, SIGINT) and a watched task that ended although nothing asked
    it to (`watch`) both end `serve`'s wait; after the latter the process shuts down
    the same graceful way and exits 1. A task's owner `release`s it before stopping
    it; once `closing()` was called (shutdown has begun) no ending is reported.
    """

    def __init__(self) -> None:
        self.stopped = asyncio.Event()
        self.failure: str | None = None
        self._closing = False
        self._watched: dict[asyncio.Task[Any], Callable[[asyncio.Task[Any]], object]] = {}

    def stop(self) -> None:
        self.stopped.set()

    def closing(self) -> None:
        self._closing = True

    def watch(self, task: asyncio.Task[Any], what: str) -> None:
        callback = partial(self._ended, what)
        self._watched[task] = callback
        task.add_done_callback(callback)

    def release(self, task: asyncio.Task[Any]) -> None:
        """Stop watching `task` (its owner is about to stop it)."""
        callback = self._watched.pop(task, None)
        if callback is not None:
            task.remove_done_callback(callback)

    def _ended(self, what: str, task: asyncio.Task[Any]) -> None:
        self._watched.pop(task, None)
        if self._closing:
            return
        if task.cancelled():
            error = "cancelled"
        else:
            exc = task.exception()
            error = f"{type(exc).__name__}: {exc}" if exc is not None else "returned"
        log.error("a supervised task ended; stopping the service", task=what, error=error)
        if self.failure is None:
            self.failure = f"{what}: {error}"
        self.stopped.set()


SUPERVISOR = web.AppKey("supervisor", Supervisor)


def create_base_app(
    name: str, *, client_max_size: int = 1024**2, middlewares: tuple[Any, ...] = ()
) -> web.Application:
    """An application with /healthz and /readyz and an empty readiness table (`serve()`
    adds /metrics, here or on a listener of its own)."""
    app = web.Application(client_max_size=client_max_size, middlewares=middlewares)
    app[SERVICE_NAME] = name
    app[READINESS] = {}
    app[STARTED_AT] = time.time()
    app[SUPERVISOR] = Supervisor()
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
        with_hiredis_packing(pool)
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
    key: web.AppKey[MongoShards],
    settings: ServiceSettings,
    collections: Sequence[CollectionSpec] = (),
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The MongoDB shards, with `collections` (and their indexes) made on each."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        shards = open_shards(
            settings.mongo_shards, settings.database_name, settings.mongo_shards_sql
        )
        app[key] = shards

        async def ready() -> bool:
            return all(await shards.ping())

        add_readiness_check(app, "mongo", ready)
        try:
            if collections:
                await bootstrap_collections(shards, collections)
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
    build: Callable[[web.Application], ConsumerLoop],
    name: str = "consumer",
    *,
    ready_when_assigned: bool = False,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Start a consumer loop after the resources it needs, stop it before them.

    Register it after the producer and storage contexts: cleanup runs in reverse,
    so on SIGTERM the loop stops (finishing and committing its batch) first. The
    loop's task is supervised. `ready_when_assigned`: the service is ready only once
    this member holds partitions (earlier, requests would wait out the rebalance).
    """

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        loop = build(app)
        await loop.start()
        assert loop.task is not None
        app[SUPERVISOR].watch(loop.task, f"consumer {loop.group}")

        async def ready() -> bool:
            return loop.running and loop.healthy

        add_readiness_check(app, name, ready)
        if ready_when_assigned:

            async def assigned() -> bool:
                return loop.assigned_once.is_set()

            add_readiness_check(app, "partitions_assigned", assigned)
        try:
            yield
        finally:
            app[SUPERVISOR].release(loop.task)
            await loop.stop()

    return ctx


@contextlib.asynccontextmanager
async def repeating(
    app: web.Application, name: str, interval_s: float, job: Callable[[], Awaitable[object]]
) -> AsyncIterator[None]:
    """Run `job` at once and then every `interval_s` while the block runs (a service
    context wraps its `yield` in it). A run that fails is logged and the next one
    retries; the task is supervised, and cancelled and awaited on exit."""

    async def run() -> None:
        while True:
            try:
                await job()
            except Exception as exc:  # the next round retries; readiness says what is missing
                log.warning("periodic job failed", job=name, error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(interval_s)

    task = asyncio.create_task(run(), name=name)
    app[SUPERVISOR].watch(task, name)
    try:
        yield
    finally:
        app[SUPERVISOR].release(task)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# -- running ---------------------------------------------------------------------------


def raise_open_file_limit() -> int:
    """Lift the soft limit on open files to the hard one: one descriptor per socket.

    A shell's default soft limit (often 1,024) would cap the gateway at about a
    thousand WebSockets however much memory it has. Returns the limit in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


def _bind(host: str, port: int, what: str = "listen") -> socket.socket:
    """A listening-ready TCP socket bound to (host, port); ConfigurationError if not."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigurationError(f"cannot {what} on {host}:{port}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def serve(service: Service[Any]) -> None:
    """Entry point of `python -m <service>`: run until SIGTERM/SIGINT, then shut down.

    Exit code 0 after a signal, 1 after a supervised task ended unasked, 2 (with one
    line on stderr) for a configuration that cannot work or a dependency that is
    unreachable at start.
    """
    name = service.name
    raise_open_file_limit()
    try:
        settings = load_settings(service.settings)
    except ConfigurationError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(name, settings.log_level)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a pinned dependency
        pass
    try:
        code = asyncio.run(_serve(name, settings, service.create_app))
    except ConfigurationError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        code = 0
    if code:
        raise SystemExit(code)


async def _serve(
    service: str,
    settings: ServiceSettings,
    app_factory: Callable[[Any], web.Application],
) -> int:
    """Start, wait for a signal or a failed task, shut down; the process's exit code.

    The ports are bound first, before anything connects: a port in use fails at
    once, and the bound API port is in the settings the app is built with (a static
    Kafka member id is made of it, libs/service.py)."""
    listeners = [_bind(settings.http_host, settings.http_port)]
    if settings.metrics_port is not None:
        try:
            listeners.append(_bind(settings.metrics_host, settings.metrics_port, "serve metrics"))
        except ConfigurationError:
            listeners[0].close()
            raise
    settings = settings.model_copy(update={"http_port": listeners[0].getsockname()[1]})
    try:
        app = app_factory(settings)
    except BaseException:
        for listener in listeners:
            listener.close()
        raise
    supervisor = app[SUPERVISOR]
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
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, supervisor.stop)

    async def abandon() -> None:
        for listener in listeners:
            listener.close()
        supervisor.closing()
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await runner.cleanup()

    try:
        await runner.setup()  # runs on_startup and enters every cleanup_ctx
    except ConfigurationError:
        await abandon()
        raise
    except OSError as exc:
        await abandon()
        raise ConfigurationError(f"a dependency is unreachable at start: {exc}") from None

    site = web.SockSite(runner, listeners[0])
    await site.start()
    if metrics_runner is not None:
        await metrics_runner.setup()
        await web.SockSite(metrics_runner, listeners[1]).start()
    sites = [site] if metrics_runner is None else [site, *metrics_runner.sites]
    bound = [
        sock.getsockname()
        for one in sites
        for sock in (one._server.sockets if one._server else [])  # type: ignore[union-attr]
    ]
    log.info("service started", service=service, listening=[f"{h}:{p}" for h, p, *_ in bound])
    await supervisor.stopped.wait()
    failure = {"failure": supervisor.failure} if supervisor.failure else {}
    log.info("service stopping", service=service, **failure)
    supervisor.closing()
    if metrics_runner is not None:
        await metrics_runner.cleanup()
    try:
        await runner.cleanup()  # on_shutdown, then cleanup_ctx exits in reverse order
    except Exception:
        log.exception("error during shutdown", service=service)
    log.info("service stopped", service=service)
    return 1 if supervisor.failure else 0
