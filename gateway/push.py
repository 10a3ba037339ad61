"""Pushes into this gateway's sockets, and the ephemeral events it fans out itself.

`realtime_context` (a cleanup_ctx entry) opens the `SocketHub`, a dedicated
Redis connection subscribed to this instance's channel
(`RedisKeys.gateway_channel(instance_id)`) and to `session_revocations`, and the
background loops:
- the listener writes every pushed frame to the local sockets of its users, and
  applies every announced revocation at once: the sessions leave the HTTP
  session cache and their sockets close (code 4001);
- the expiry check (every GATEWAY_WS_SESSION_CHECK_S, local) closes sockets
  whose session passed its absolute expiry (4001);
- the session poll (every GATEWAY_WS_SESSION_POLL_S, and after each
  resubscription) re-reads the sessions of open sockets from Redis: the
  backstop for an announcement missed while the subscription was down;
- the registry heartbeat (every GATEWAY_WS_REGISTRY_REFRESH_S) refreshes this
  instance's entries in the session registry and the sessions' idle TTL.
All are cancelled and awaited on exit, after every socket was closed with 1001.

Typing indicators and presence are ephemeral (never stored): the gateway that
sees them resolves the peers (respecting blocks both ways) and publishes them
with `libs.push.publish_frames`, like delivery_service does for messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.keys import KEYS, REDIS, SESSION_CACHE, SETTINGS
from gateway.sockets import RealtimeSettings, SocketHub
from libs.contracts.keys import RedisKeys
from libs.group_projection import group_members, share_a_group, user_groups
from libs.lifecycle import add_readiness_check
from libs.logging import get_logger
from libs.push import connections_of, live_routes, publish_frames

log = get_logger(__name__)

HUB = web.AppKey("socket_hub", SocketHub)
REALTIME_SETTINGS = web.AppKey("realtime_settings", RealtimeSettings)
#: Presence goes to at most this many peers (contacts and group co-members).
PRESENCE_PEERS_MAX = 2000
#: Co-members of larger groups are not presence peers: in a group of n members
#: online together, presence to co-members costs n^2 pushes (a million for 1,000
#: members coming online), which would drown the group's messages.
PRESENCE_GROUP_MAX_MEMBERS = 256


async def realtime_context(app: web.Application) -> AsyncIterator[None]:
    """The hub, the push channel subscription and the background loops (cleanup_ctx)."""
    settings = app[SETTINGS]
    realtime = app[REALTIME_SETTINGS]
    hub = SocketHub(app[REDIS], app[KEYS], settings.instance_id, realtime)
    app[HUB] = hub
    subscriber = Redis.from_url(
        settings.redis_url, decode_responses=True, socket_connect_timeout=3, socket_timeout=None
    )
    channels = Channels(
        push=app[KEYS].gateway_channel(settings.instance_id),
        revocations=app[KEYS].session_revocations(),
    )
    subscribed = asyncio.Event()

    def revoked(hashes: list[str]) -> None:
        app[SESSION_CACHE].forget(*hashes)
        hub.close_sessions(hashes)

    tasks = [
        asyncio.create_task(
            _listen(subscriber, channels, hub, revoked, subscribed), name="ws-push"
        ),
        asyncio.create_task(_every(realtime.session_check_s, hub.close_expired), name="ws-expiry"),
        asyncio.create_task(_every(realtime.session_poll_s, hub.close_revoked), name="ws-sessions"),
        asyncio.create_task(
            _every(realtime.registry_refresh_s, _heartbeat(hub)), name="ws-registry"
        ),
    ]

    async def ready() -> bool:
        return subscribed.is_set()

    add_readiness_check(app, "push_channel", ready)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(subscribed.wait(), 10)
    try:
        yield
    finally:
        await hub.close_all()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await subscriber.aclose()


def _heartbeat(hub: SocketHub) -> Callable[[], Awaitable[Any]]:
    async def beat() -> None:
        await hub.refresh_registry()
        await hub.extend_sessions()

    return beat


async def _every(period_s: float, action: Callable[[], Any]) -> None:
    """Run `action` (sync or async) every `period_s`; a Redis failure skips one step."""
    while True:
        await asyncio.sleep(period_s)
        try:
            result = action()
            if isinstance(result, Awaitable):
                await result
        except (RedisError, OSError) as exc:
            log.warning("realtime loop step failed", error=f"{type(exc).__name__}: {exc}")


@dataclass(frozen=True, slots=True)
class Channels:
    """What the listener subscribes to: this instance's pushes, every revocation."""

    push: str
    revocations: str


async def _listen(
    subscriber: Redis,
    channels: Channels,
    hub: SocketHub,
    revoked: Callable[[list[str]], None],
    subscribed: asyncio.Event,
) -> None:
    """Write pushed frames to local sockets and apply revocations; resubscribe after
    a Redis outage (then re-check every open socket's session: announcements sent
    meanwhile are lost)."""
    first = True
    while True:
        try:
            async with subscriber.pubsub() as pubsub:
                await pubsub.subscribe(channels.push, channels.revocations)
                subscribed.set()
                if not first:
                    await hub.close_revoked()
                first = False
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    if message.get("channel") == channels.revocations:
                        _apply_revocation(message["data"], revoked)
                        continue
                    try:
                        payload = orjson.loads(message["data"])
                        for push in payload["pushes"]:
                            hub.deliver(push["user_ids"], push["frame"])
                            # Written before the next push: a batch of many frames
                            # for one user must not look like a slow consumer.
                            await hub.write_delivered()
                        await asyncio.sleep(0)  # other tasks run between payloads
                    except (ValueError, KeyError, TypeError) as exc:
                        log.warning("undecodable push ignored", error=str(exc)[:200])
        except asyncio.CancelledError:
            raise
        except (RedisError, OSError) as exc:
            subscribed.clear()
            log.warning("push channel lost; resubscribing", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(0.5)


def _apply_revocation(data: str, revoked: Callable[[list[str]], None]) -> None:
    try:
        hashes = orjson.loads(data)
        if not isinstance(hashes, list) or not all(isinstance(h, str) for h in hashes):
            raise TypeError("not a list of token hashes")
    except (ValueError, TypeError) as exc:
        log.warning("undecodable revocation ignored", error=str(exc)[:200])
        return
    revoked(hashes)


# -- ephemeral fan-out: typing and presence ------------------------------------------


async def mutual_blocks(redis: Redis, keys: RedisKeys, user_id: str, others: list[str]) -> set[str]:
    """Those of `others` who block `user_id` or whom `user_id` blocks (one round trip)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.smembers(keys.blocks(user_id))
        for other in others:
            pipe.sismember(keys.blocks(other), user_id)
        blocked, *flags = await pipe.execute()
    return {o for o, flag in zip(others, flags, strict=True) if flag} | (set(blocked) & set(others))


async def push_typing(app: web.Application, user_id: str, kind: str, target_id: str) -> None:
    """Tell the conversation's peers that `user_id` is typing (not stored)."""
    redis, keys = app[REDIS], app[KEYS]
    if kind == "group":
        members = await group_members(redis, keys, target_id) or {}
        peers = [m for m in members if m != user_id]
        conversation = f"group:{target_id}"
    else:
        peers = [target_id]
        conversation = f"user:{user_id}"  # as the recipient names the conversation
    peers = [p for p in peers if p not in await mutual_blocks(redis, keys, user_id, peers)]
    frame = {"type": "typing", "user_id": user_id, "conversation": conversation}
    await publish_frames(redis, keys, [(peers, frame)])


async def presence_peers(redis: Redis, keys: RedisKeys, user_id: str) -> list[str]:
    """Direct contacts and co-members of small groups (PRESENCE_GROUP_MAX_MEMBERS) of
    `user_id`, minus blocks either way."""
    contacts = await redis.smembers(keys.contacts(user_id))
    try:
        groups = sorted(await user_groups(redis, keys, user_id))
    except Exception:  # the groups projection is being rebuilt: contacts only
        groups = []
    peers = set(contacts)
    small: list[str] = []
    if groups:
        async with redis.pipeline(transaction=False) as pipe:
            for group_id in groups:
                pipe.hlen(keys.group_members(group_id))
            sizes = await pipe.execute()
        small = [g for g, n in zip(groups, sizes, strict=True) if n <= PRESENCE_GROUP_MAX_MEMBERS]
    if small:
        async with redis.pipeline(transaction=False) as pipe:
            for group_id in small:
                pipe.hkeys(keys.group_members(group_id))
            for members in await pipe.execute():
                peers.update(members)
                if len(peers) > PRESENCE_PEERS_MAX:
                    break
    peers.discard(user_id)
    ordered = sorted(peers)[:PRESENCE_PEERS_MAX]
    if not ordered:
        return []
    blocked = await mutual_blocks(redis, keys, user_id, ordered)
    return [p for p in ordered if p not in blocked]


async def presence_visible(redis: Redis, keys: RedisKeys, viewer_id: str, user_id: str) -> bool:
    """Whether `viewer_id` may see `user_id`'s presence: only a contact (a direct
    conversation between them) or a co-member of a group, and never across a block
    either way (docs/realtime.md, "Who sees what")."""
    if viewer_id == user_id:
        return True
    if await mutual_blocks(redis, keys, viewer_id, [user_id]):
        return False
    if await redis.sismember(keys.contacts(viewer_id), user_id):
        return True
    return await share_a_group(redis, keys, viewer_id, user_id)


async def push_presence(app: web.Application, user_id: str, online: bool) -> None:
    """Tell `user_id`'s peers that it went online or offline."""
    redis, keys = app[REDIS], app[KEYS]
    peers = await presence_peers(redis, keys, user_id)
    frame: dict[str, Any] = {
        "type": "presence",
        "user_id": user_id,
        "online": online,
        "last_seen": None if online else int(time.time()),
    }
    await publish_frames(redis, keys, [(peers, frame)])


async def announce_connection(
    app: web.Application, user_id: str, went_online: bool, send: Callable[[dict[str, Any]], Any]
) -> None:
    """A new socket: tell the peers if the user just came online, and give the socket
    a snapshot of its peers that are online (one `presence` frame each)."""
    redis, keys = app[REDIS], app[KEYS]
    peers = await presence_peers(redis, keys, user_id)
    if went_online:
        frame = {"type": "presence", "user_id": user_id, "online": True, "last_seen": None}
        await publish_frames(redis, keys, [(peers, frame)])
    for peer, routes in (await connections_of(redis, keys, peers)).items():
        if routes:
            send({"type": "presence", "user_id": peer, "online": True, "last_seen": None})


async def presence_of(redis: Redis, keys: RedisKeys, user_id: str) -> tuple[bool, int | None]:
    """(online, last_seen epoch seconds) from the session registry."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.user_connections(user_id))
        pipe.get(keys.last_seen(user_id))
        fields, last_seen = await pipe.execute()
    online = bool(live_routes(fields))
    return online, (int(last_seen) if last_seen else None)


async def close_sockets_on_shutdown(app: web.Application) -> None:
    """SIGTERM: close every socket with 1001 at once (clients reconnect elsewhere)
    instead of holding them open until the runner's shutdown timeout cancels them."""
    if HUB in app:
        await app[HUB].close_all()


def setup_realtime(app: web.Application, settings: RealtimeSettings) -> None:
    app[REALTIME_SETTINGS] = settings
    app.cleanup_ctx.append(realtime_context)
    app.on_shutdown.append(close_sockets_on_shutdown)
