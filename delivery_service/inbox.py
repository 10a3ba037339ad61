"""The inbox read model: each user's conversations, their last message, unread count,
mute and archive. The only code writing it (readers: libs/inbox_projection.py).

Redis (keys in libs/contracts/keys.py, delivery section):
- `inbox:<user>` / `inbox_archived:<user>`: sorted sets conversation -> last
  activity (ms), the order of GET /v1/conversations; a conversation is in one of them;
- `inbox_entry:<user>:<conversation>`: hash kind, id, last_activity_ms,
  last_message (stored MessageView JSON), last_message_id, muted, archived,
  read_seq (the user's read watermark of the conversation, as far as seen here),
  standin ("1" while the activity time is the settings change's, not a message's);
- `unread:<user>:<conversation>`: sorted set of the seqs of others' messages
  after the read watermark. The unread count is its ZCARD: O(1), never a count
  over messages. A read removes the seqs up to the watermark; a delete removes the
  message's seq. Bounded to UNREAD_KEPT (the count saturates there).
Conversations are "user:<peer>" and "group:<group id>", as the user names them.

MongoDB `conversation_settings` (on the user's shard, `_id` = "<user>|<conversation>"):
the durable mute/archive settings, written before the reply to a PATCH (and when
a message un-archives a conversation); they are reloaded into Redis when the
`projection_ready("inbox")` sentinel is missing (Redis flushed). The rest of the
model (last message, unread seqs) is derived from the message stream and refills
as messages arrive (docs/conversations.md, known limits).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pymongo import UpdateOne
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from libs.contracts.keys import RedisKeys
from libs.inbox_projection import PROJECTION, SETTINGS_COLLECTION, settings_id
from libs.storage.mongo import CollectionSpec, MongoShards, bulk_update
from libs.storage.redis_scripts import LuaScript, run_pipeline

SETTINGS = CollectionSpec(SETTINGS_COLLECTION, shard_key={"user_id": "hashed"})
#: Unread seqs kept per conversation: the unread count saturates here.
UNREAD_KEPT = 10_000

# One call records one conversation moving for many users (a group message reaches
# every member in one call; its shared arguments travel once).
# KEYS: per user 4 keys: entry, inbox, inbox_archived, unread.
# ARGV: conversation, kind, id, ms, last_message JSON ('' = none), last_message_id,
# cap, is_message ('1': a new message, which un-archives unless muted), then per
# user the unread seq ('' = none). Returns per user 1 when it un-archived the
# conversation, else 0.
_TOUCH = LuaScript("""
local conversation, kind, id = ARGV[1], ARGV[2], ARGV[3]
local at, body, body_id = tonumber(ARGV[4]), ARGV[5], ARGV[6]
local cap, is_message = tonumber(ARGV[7]), ARGV[8] == '1'
local flags = {}
for i = 1, #KEYS / 4 do
  local entry, inbox, archive, unread = KEYS[4*i-3], KEYS[4*i-2], KEYS[4*i-1], KEYS[4*i]
  local state = redis.call('HMGET', entry, 'muted', 'archived', 'last_activity_ms',
                           'standin', 'read_seq')
  local muted, archived = state[1] == '1', state[2] == '1'
  local current = tonumber(state[3] or '0')
  -- An entry made by a settings change alone has a stand-in activity time: the
  -- first message (or join) replaces it.
  local standin = state[4] == '1'
  local ms = at
  local unarchived = 0
  if ms >= current or standin then
    if standin then redis.call('HDEL', entry, 'standin') end
    if body ~= '' then
      redis.call('HSET', entry, 'kind', kind, 'id', id, 'last_activity_ms', ARGV[4],
                 'last_message', body, 'last_message_id', body_id)
    else
      redis.call('HSET', entry, 'kind', kind, 'id', id, 'last_activity_ms', ARGV[4])
    end
  else
    ms = current
    redis.call('HSET', entry, 'kind', kind, 'id', id)
  end
  if is_message and archived and not muted then
    archived = false
    unarchived = 1
    redis.call('HSET', entry, 'archived', '0')
  end
  if archived then
    redis.call('ZREM', inbox, conversation)
    redis.call('ZADD', archive, ms, conversation)
  else
    redis.call('ZREM', archive, conversation)
    redis.call('ZADD', inbox, ms, conversation)
  end
  local seq = ARGV[8 + i]
  if seq ~= '' and tonumber(seq) > tonumber(state[5] or '0') then
    redis.call('ZADD', unread, seq, seq)
    local n = redis.call('ZCARD', unread)
    if n > cap then redis.call('ZREMRANGEBYRANK', unread, 0, n - cap - 1) end
  end
  flags[i] = unarchived
end
return flags
""")

# KEYS: entry, unread. ARGV: seq. Returns {unread, muted, archived, read_seq}.
_READ = """
local current = tonumber(redis.call('HGET', KEYS[1], 'read_seq') or '0')
local seq = tonumber(ARGV[1])
if seq > current then
  redis.call('HSET', KEYS[1], 'read_seq', ARGV[1])
  current = seq
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
return {redis.call('ZCARD', KEYS[2]), redis.call('HGET', KEYS[1], 'muted') or '0',
        redis.call('HGET', KEYS[1], 'archived') or '0', current}
"""

# KEYS: entry, inbox, inbox_archived. ARGV: conversation, kind, id, now ms, muted
# ('' = unchanged), archived ('' = unchanged).
_SETTINGS = """
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'muted', ARGV[5]) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'archived', ARGV[6]) end
redis.call('HSET', KEYS[1], 'kind', ARGV[2], 'id', ARGV[3])
local ms = redis.call('HGET', KEYS[1], 'last_activity_ms')
if not ms then
  ms = ARGV[4]
  redis.call('HSET', KEYS[1], 'last_activity_ms', ms, 'standin', '1')
end
if redis.call('HGET', KEYS[1], 'archived') == '1' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZADD', KEYS[3], ms, ARGV[1])
else
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('ZADD', KEYS[2], ms, ARGV[1])
end
return 1
"""

# KEYS: entry. ARGV: message id, stored view JSON. Replaces the last message if it is it.
_REPLACE_LAST = LuaScript("""
if redis.call('HGET', KEYS[1], 'last_message_id') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'last_message', ARGV[2])
  return 1
end
return 0
""")


@dataclass(frozen=True, slots=True)
class Touch:
    """One conversation of one user moved by a message (or a join)."""

    user_id: str
    kind: str
    target_id: str
    at_ms: int
    last_message: str = ""
    last_message_id: str = ""
    unread_seq: int | None = None
    is_message: bool = True

    @property
    def conversation(self) -> str:
        return f"{self.kind}:{self.target_id}"


#: Most users one touch call carries. A script blocks Redis while it runs (13 us a
#: user here), and every other client's command waits: 64 users hold it ~1 ms.
TOUCH_CALL_MAX = 64


def _touch_calls(touches: Sequence[Touch]) -> list[list[Touch]]:
    """Consecutive touches of one conversation event (same conversation, time, last
    message), in order and in chunks of TOUCH_CALL_MAX: one script call each."""
    calls: list[list[Touch]] = []
    for t in touches:
        if calls:
            last = calls[-1]
            first = last[0]
            if (
                len(last) < TOUCH_CALL_MAX
                and t.conversation == first.conversation
                and t.at_ms == first.at_ms
                and t.last_message_id == first.last_message_id
                and t.is_message == first.is_message
                and t.last_message == first.last_message
            ):
                last.append(t)
                continue
        calls.append([t])
    return calls


@dataclass(frozen=True, slots=True)
class ReadState:
    unread_count: int
    muted: bool
    archived: bool
    read_seq: int


class InboxRepository:
    def __init__(self, redis: Redis, keys: RedisKeys, mongo: MongoShards) -> None:
        self.redis = redis
        self.keys = keys
        self.mongo = mongo
        self._read = redis.register_script(_READ)
        self._settings = redis.register_script(_SETTINGS)

    def _entry_keys(self, user_id: str, conversation: str) -> list[str]:
        return [
            self.keys.inbox_entry(user_id, conversation),
            self.keys.inbox(user_id, archived=False),
            self.keys.inbox(user_id, archived=True),
        ]

    async def touch(self, touches: Sequence[Touch]) -> None:
        """Record messages (and joins) in their users' inboxes, one pipeline; the
        conversations a message un-archived are written back to MongoDB."""
        if not touches:
            return

        calls = _touch_calls(touches)

        def build(pipe: Pipeline) -> None:
            for call in calls:
                first = call[0]
                keys: list[str] = []
                seqs: list[int | str] = []
                for t in call:
                    keys += self._entry_keys(t.user_id, t.conversation)
                    keys.append(self.keys.unread(t.user_id, t.conversation))
                    seqs.append("" if t.unread_seq is None else t.unread_seq)
                shared = [
                    first.conversation,
                    first.kind,
                    first.target_id,
                    first.at_ms,
                    first.last_message,
                    first.last_message_id,
                    UNREAD_KEPT,
                    "1" if first.is_message else "0",
                ]
                _TOUCH.queue(pipe, keys, [*shared, *seqs])

        replies = await run_pipeline(self.redis, build, [_TOUCH])
        flags = [flag for reply in replies for flag in reply]
        unarchived = [t for t, flag in zip(touches, flags, strict=True) if flag]
        if unarchived:
            await self._store_settings(
                [(t.user_id, t.conversation, None, False) for t in unarchived]
            )

    async def mark_read(self, user_id: str, conversation: str, seq: int) -> ReadState:
        unread, muted, archived, read_seq = await self._read(
            keys=[
                self.keys.inbox_entry(user_id, conversation),
                self.keys.unread(user_id, conversation),
            ],
            args=[seq],
        )
        return ReadState(int(unread), muted == "1", archived == "1", int(read_seq))

    async def update_settings(
        self, user_id: str, kind: str, target_id: str, muted: bool | None, archived: bool | None
    ) -> ReadState:
        """Durable first (MongoDB), then the read model; the state after it."""
        conversation = f"{kind}:{target_id}"
        await self._store_settings([(user_id, conversation, muted, archived)])
        await self._apply_settings(user_id, kind, target_id, muted, archived)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(
                self.keys.inbox_entry(user_id, conversation), "muted", "archived", "read_seq"
            )
            pipe.zcard(self.keys.unread(user_id, conversation))
            (m, a, r), unread = await pipe.execute()
        return ReadState(int(unread), m == "1", a == "1", int(r or 0))

    async def _apply_settings(
        self, user_id: str, kind: str, target_id: str, muted: bool | None, archived: bool | None
    ) -> None:
        import time

        conversation = f"{kind}:{target_id}"
        await self._settings(
            keys=self._entry_keys(user_id, conversation),
            args=[
                conversation,
                kind,
                target_id,
                int(time.time() * 1000),
                "" if muted is None else ("1" if muted else "0"),
                "" if archived is None else ("1" if archived else "0"),
            ],
        )

    async def _store_settings(
        self, changes: Sequence[tuple[str, str, bool | None, bool | None]]
    ) -> None:
        by_shard: dict[int, list[UpdateOne]] = {}
        for user_id, conversation, muted, archived in changes:
            fields: dict[str, object] = {}
            if muted is not None:
                fields["muted"] = muted
            if archived is not None:
                fields["archived"] = archived
            if not fields:
                continue
            by_shard.setdefault(self.mongo.shard_index(user_id), []).append(
                UpdateOne(
                    {"_id": settings_id(user_id, conversation)},
                    {
                        "$set": fields,
                        "$setOnInsert": {"user_id": user_id, "conversation": conversation},
                    },
                    upsert=True,
                )
            )
        for index, operations in by_shard.items():
            await bulk_update(self.mongo.databases[index][SETTINGS_COLLECTION], operations)

    async def leave(self, user_id: str, conversation: str) -> None:
        """The user left the group (or it was deleted): it leaves the inbox."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(self.keys.inbox(user_id, archived=False), conversation)
            pipe.zrem(self.keys.inbox(user_id, archived=True), conversation)
            pipe.delete(self.keys.inbox_entry(user_id, conversation))
            pipe.delete(self.keys.unread(user_id, conversation))
            await pipe.execute()

    async def message_changed(
        self,
        entries: Sequence[tuple[str, str]],
        message_id: str,
        view_json: str,
        deleted_seq: int | None,
    ) -> None:
        """An edited or deleted message: the new last message where it is the last one
        of (user, conversation) `entries`; a deleted one leaves their unread seqs."""

        def build(pipe: Pipeline) -> None:
            for user_id, conversation in entries:
                _REPLACE_LAST.queue(
                    pipe, [self.keys.inbox_entry(user_id, conversation)], [message_id, view_json]
                )
                if deleted_seq is not None:
                    pipe.zrem(self.keys.unread(user_id, conversation), deleted_seq)

        await run_pipeline(self.redis, build, [_REPLACE_LAST])

    async def projection_ready(self) -> bool:
        return bool(await self.redis.exists(self.keys.projection_ready(PROJECTION)))

    async def reload_settings(self) -> int:
        """Redis lost the inbox: put the durable settings back, then set the sentinel."""
        count = 0
        for collection in self.mongo.collections(SETTINGS_COLLECTION):
            async for doc in collection.find({}):
                kind, _, target_id = str(doc["conversation"]).partition(":")
                await self._apply_settings(
                    doc["user_id"], kind, target_id, doc.get("muted"), doc.get("archived")
                )
                count += 1
        await self.redis.set(self.keys.projection_ready(PROJECTION), "1")
        return count
