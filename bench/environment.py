"""The system under benchmark: the local stack, the six services, users and groups.

`BenchSystem.start` makes sure Redis, Kafka and the FerretDB shards run (the same
launcher as `make up`), raises this process's file-descriptor limit (the services
inherit it: a gateway holding many WebSockets needs one descriptor per socket),
and starts the six services in a fresh namespace with tests/support/system.py, so
it knows each service's pid for CPU accounting. Seeding goes through the public
API like any client: POST /v1/users, POST /v1/sessions, POST /v1/groups,
PUT /v1/groups/{id}/members/{user_id}.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from pymongo import AsyncMongoClient

from bench.loadgen import raise_fd_limit, ws_url
from bench.profile import metric_families
from tests.support.client import Api, User
from tests.support.system import ROOT, RunningSystem

#: The persister's collection of messages (persister/repository.py).
MESSAGES_COLLECTION = "messages"
#: The persister's counter of messages written (persister/handlers.py).
STORED_METRIC = "messenger_messages_stored_total"


class NotAvailable(Exception):
    """A feature a scenario needs is not in the system (yet): the reason, one line."""


@dataclass
class BenchSystem:
    system: RunningSystem
    namespace: str
    database: str
    mongo_uris: tuple[str, ...]
    infra_pids: dict[str, int]
    fd_limit: int
    mongo: list[AsyncMongoClient] = field(default_factory=list)
    documents_at_start: int = 0
    stored_at_start: int = 0
    #: Filler documents scenario 6 wrote straight into the shards.
    inserted_directly: int = 0
    #: For the persister's /metrics, polled while steps settle (opened on first use).
    _http: aiohttp.ClientSession | None = None

    @classmethod
    def start(cls, extra_env: dict[str, str] | None = None) -> BenchSystem:
        from bench.procstat import infra_pids
        from deploy.local.stack import StackConfig, ensure_running

        endpoints = ensure_running()
        fd_limit = raise_fd_limit()
        namespace = "b" + secrets.token_hex(5)
        log_dir = ROOT / ".local" / "bench-logs" / namespace
        system = RunningSystem.start(namespace, log_dir=log_dir, extra_env=extra_env)
        return cls(
            system=system,
            namespace=namespace,
            database=f"messenger_{namespace}",
            mongo_uris=tuple(endpoints.mongo_shards),
            infra_pids=infra_pids(StackConfig.from_env().run_dir),
            fd_limit=fd_limit,
        )

    @property
    def gateway_url(self) -> str:
        return self.system.gateway_url

    @property
    def log_dir(self) -> Path:
        return self.system.log_dir

    def service_pids(self) -> dict[str, int]:
        pids = {}
        for name, proc in self.system.services.items():
            if proc.process is not None and proc.process.poll() is None:
                pids[name] = proc.process.pid
        return pids

    def all_pids(self) -> dict[str, int]:
        """Every process of the system: the six services and the infrastructure."""
        return {**self.service_pids(), **self.infra_pids}

    def messages_collections(self) -> list[object]:
        if not self.mongo:
            self.mongo = [
                # A full count of 10^5-10^6 documents through FerretDB takes minutes.
                AsyncMongoClient(uri, serverSelectionTimeoutMS=5000, socketTimeoutMS=900_000)
                for uri in self.mongo_uris
            ]
        return [client[self.database][MESSAGES_COLLECTION] for client in self.mongo]

    async def persisted_count(self) -> list[int]:
        """Documents in the messages collection of each shard (a full count).

        A full scan on FerretDB's SQLite backend: run it only while nothing is being
        inserted (twice a shard stopped answering one run beside heavy inserts).
        """
        return [await c.count_documents({}) for c in self.messages_collections()]  # type: ignore[attr-defined]

    async def stored_count(self) -> int:
        """Messages the persister has acknowledged writing (its /metrics counter)."""
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        families = await metric_families(self._http, self.system.services["persister"].metrics_url)
        return int(sum(s.value for f in families for s in f.samples if s.name == STORED_METRIC))

    async def wait_persisted(self, expected_total: int, timeout_s: float = 30.0) -> int:
        """Poll the persister until it has stored `expected_total`; return the last total.

        Per step the bench trusts the persister's counter of acknowledged writes (no
        scan beside the load); `verify_storage` checks the counter against a real count
        of the shards once the load has stopped.
        """
        deadline = time.monotonic() + timeout_s
        total = await self.stored_count()
        while total < expected_total and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            total = await self.stored_count()
        return total

    async def baseline_storage(self) -> None:
        """Remember what the shards and the persister hold before any load."""
        self.documents_at_start = sum(await self.persisted_count())
        self.stored_at_start = await self.stored_count()

    async def verify_storage(self) -> tuple[int, int]:
        """(documents in the shards, documents expected): the start count, plus what the
        persister says it stored since, plus what the bench inserted itself."""
        stored = await self.stored_count()
        while True:  # until the persister has nothing left in flight
            await asyncio.sleep(1.0)
            latest = await self.stored_count()
            if latest == stored:
                break
            stored = latest
        counted = sum(await self.persisted_count())
        written = stored - self.stored_at_start
        expected = self.documents_at_start + written + self.inserted_directly
        return counted, expected

    async def close(self) -> None:
        for client in self.mongo:
            await client.close()
        self.mongo = []
        if self._http is not None:
            await self._http.close()
            self._http = None

    def stop(self) -> dict[str, int]:
        """Stop the services and delete the namespace's topics and database."""
        codes = self.system.stop()
        self.system.discard()
        return codes


# --------------------------------------------------------------------------- seeding


async def seed_users(
    api: Api, count: int, *, concurrency: int = 16, prefix: str = "bench"
) -> list[User]:
    """Register and log in `count` users through the API (argon2 makes this the slow part)."""
    probe = await api.call("POST", "/v1/users", json={})
    if probe.status in (404, 405):
        raise NotAvailable(f"accounts: POST /v1/users answered {probe.status}")
    limiter = asyncio.Semaphore(concurrency)
    password = "bench-" + secrets.token_hex(8)

    async def one(index: int) -> User:
        async with limiter:
            username = f"{prefix}_{index}_{secrets.token_hex(3)}"[:32]
            for attempt in range(5):
                registered = await api.register(username, password)
                if registered.status == 201:
                    break
                if registered.status == 429 or registered.status >= 500:
                    await asyncio.sleep(0.5 * (attempt + 1))
                    continue
                raise NotAvailable(f"accounts: register answered {registered.status}")
            else:
                raise NotAvailable(f"accounts: register answered {registered.status}")
            for attempt in range(5):
                login = await api.login(username, password)
                if login.status == 201:
                    break
                if login.status == 429 or login.status >= 500:
                    await asyncio.sleep(0.5 * (attempt + 1))
                    continue
                raise NotAvailable(f"accounts: login answered {login.status}")
            else:
                raise NotAvailable(f"accounts: login answered {login.status}")
            return User(registered.body["id"], username, password, login.body["token"])

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def create_group(
    api: Api, owner: User, members: Sequence[User], *, concurrency: int = 16
) -> str:
    """A group owned by `owner` with every user of `members` in it; its id."""
    others = [u.id for u in members if u.id != owner.id]
    # Up to 1,000 members join with the create request itself; the rest one by one.
    first, rest_ids = others[:1000], set(others[1000:])
    created = await api.call(
        "POST",
        "/v1/groups",
        json={"name": "bench " + secrets.token_hex(3), "member_ids": first},
        token=owner.token,
    )
    if created.status in (404, 405):
        raise NotAvailable(f"groups: POST /v1/groups answered {created.status}")
    if created.status != 201:
        raise NotAvailable(f"groups: create answered {created.status}: {str(created.body)[:200]}")
    group_id = str(created.body["id"])
    limiter = asyncio.Semaphore(concurrency)

    async def add(user: User) -> None:
        if user.id == owner.id:
            return
        async with limiter:
            for attempt in range(5):
                reply = await api.call(
                    "PUT", f"/v1/groups/{group_id}/members/{user.id}", token=owner.token
                )
                if reply.status in (200, 201, 204):
                    return
                if reply.status in (429, 503, 504):
                    await asyncio.sleep(0.5 * (attempt + 1))
                    continue
                raise NotAvailable(f"groups: add member answered {reply.status}: {reply.body}")
            raise NotAvailable("groups: add member kept failing")

    await asyncio.gather(*(add(u) for u in members if u.id in rest_ids))
    return group_id


async def require_websocket(http: aiohttp.ClientSession, base_url: str, user: User) -> None:
    """NotAvailable unless /v1/ws accepts an authenticated WebSocket."""
    try:
        ws = await http.ws_connect(ws_url(base_url), headers=user.auth)
    except aiohttp.WSServerHandshakeError as exc:
        raise NotAvailable(f"real-time: GET /v1/ws answered {exc.status}") from None
    await ws.close()


async def require_route(
    api: Api, method: str, path: str, token: str, what: str, params: dict[str, str] | None = None
) -> None:
    """NotAvailable if the gateway has no such route (aiohttp's own 404/405, not a domain one)."""
    reply = await api.call(
        method,
        path,
        token=token,
        params=params,
        json={} if method not in ("GET", "DELETE") else None,
    )
    message = ""
    if isinstance(reply.body, dict) and isinstance(reply.body.get("error"), dict):
        message = str(reply.body["error"].get("message", ""))
    if reply.status == 405 or (reply.status == 404 and message in ("", "Not Found")):
        raise NotAvailable(f"{what}: {method} {path} answered {reply.status}")


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
