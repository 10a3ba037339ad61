"""The session registry and push fan-out shared by the gateway and delivery_service.

Registry (docs/realtime.md): `conns:<user>` is a hash connection_id ->
"<gateway instance>|<expires_at>". The gateway holding a socket writes its field
at connect, refreshes it on every heartbeat and deletes it at disconnect; a
gateway that dies leaves fields that expire (readers ignore them, writers prune
them), and the whole key expires when no gateway refreshes it.

Push: `publish_frames` looks every target user's connections up in ONE pipelined
round trip, then PUBLISHes ONE payload per gateway instance on that instance's
channel, whatever the number of frames and users (batched fan-out):

    {"pushes": [{"user_ids": ["u1", "u2"], "frame": {"type": "message", ...}}]}

The receiving gateway writes each frame to every local socket of each listed
user. Push is a fast path: a lost push is caught up by sync (by seq).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from redis.asyncio import Redis

from libs.contracts.keys import RedisKeys

#: Seconds a registry entry lives without a heartbeat.
CONNECTION_TTL_S = 30


def route_value(instance_id: str, ttl_s: float = CONNECTION_TTL_S) -> str:
    return f"{instance_id}|{int(time.time() + ttl_s)}"


def live_routes(fields: dict[str, str], now: float | None = None) -> dict[str, str]:
    """connection_id -> instance of the entries not yet expired."""
    now = time.time() if now is None else now
    live: dict[str, str] = {}
    for connection_id, value in fields.items():
        instance, _, expires = value.rpartition("|")
        try:
            if float(expires) > now:
                live[connection_id] = instance
        except ValueError:
            continue
    return live


#: Atomically: drop the user's expired entries, count the live ones other than
#: ARGV[1], and write ARGV[1] only while that count is below the cap ARGV[3].
#: Returns {admitted (0/1), live entries before}. The registry's one writer of a
#: new entry: a check-then-add over two round trips let racing handshakes of
#: one user pass the cap together.
CLAIM_CONNECTION_LUA = """
local fields = redis.call('HGETALL', KEYS[1])
local now = tonumber(ARGV[4])
local live = 0
for i = 1, #fields, 2 do
  local id, value = fields[i], fields[i + 1]
  local expires = tonumber(string.match(value, '|([^|]*)$'))
  if expires ~= nil and expires <= now then
    redis.call('HDEL', KEYS[1], id)
  elseif expires ~= nil and id ~= ARGV[1] then
    live = live + 1
  end
end
if live >= tonumber(ARGV[3]) then
  return {0, live}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return {1, live}
"""


async def connections_of(
    redis: Redis, keys: RedisKeys, user_ids: Iterable[str]
) -> dict[str, dict[str, str]]:
    """user_id -> {connection_id: instance} of live connections (one round trip)."""
    users = list(dict.fromkeys(user_ids))
    if not users:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for user_id in users:
            pipe.hgetall(keys.user_connections(user_id))
        results = await pipe.execute()
    now = time.time()
    return {user: live_routes(fields, now) for user, fields in zip(users, results, strict=True)}


async def publish_frames(
    redis: Redis, keys: RedisKeys, pushes: Sequence[tuple[Sequence[str], dict[str, Any]]]
) -> int:
    """Push each (user_ids, frame) to every socket of those users; returns payloads sent."""
    if not pushes:
        return 0
    routes = await connections_of(redis, keys, (u for users, _ in pushes for u in users))
    by_instance: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for user_ids, frame in pushes:
        per_instance: dict[str, list[str]] = defaultdict(list)
        for user_id in dict.fromkeys(user_ids):
            for instance in set(routes.get(user_id, {}).values()):
                per_instance[instance].append(user_id)
        for instance, users in per_instance.items():
            by_instance[instance].append({"user_ids": users, "frame": frame})
    if not by_instance:
        return 0
    async with redis.pipeline(transaction=False) as pipe:
        for instance, items in by_instance.items():
            pipe.publish(keys.gateway_channel(instance), orjson.dumps({"pushes": items}))
        await pipe.execute()
    return len(by_instance)
