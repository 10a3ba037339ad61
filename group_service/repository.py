"""group_service storage: its MongoDB collections and its Redis projections.

The only code that touches them. MongoDB is the durable source:

- `groups` (routed by group_id): {_id: group_id, name, owner_id, created_at}
- `memberships` (routed by group_id): {_id: "<group_id>/<user_id>", group_id,
  user_id, role, joined_at}
- `user_groups` (routed by user_id): {_id: "<user_id>/<group_id>", user_id,
  group_id, joined_at}: "my groups" where a user's data lives
- `blocks` (routed by blocker_id): {_id: "<blocker_id>/<blocked_id>", blocker_id,
  blocked_id, created_at}

Redis holds the projections others read (libs.group_projection): `group:<id>`,
`group_members:<id>`, `group_joined:<id>`, `user_groups:<user>`,
`blocks:<blocker>`, complete while the `projection_ready("groups")` sentinel
exists. Every write goes to MongoDB first, then to Redis in one MULTI, before
the command is answered (read-your-writes). Command handlers read group state
from the projection (one Redis round trip; MongoDB is the record), so a missing
sentinel is repaired by `rebuild_projection` before any command is handled.

Deduplication relies on unique indexes (duplicate inserts are ignored), so a
redelivered command re-applies harmlessly.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client import Counter
from pymongo import ASCENDING
from pymongo.errors import BulkWriteError, DuplicateKeyError
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import LockError, WatchError

from libs.contracts.groups import GroupView, MemberView, Role
from libs.contracts.keys import RedisKeys
from libs.errors import Unavailable
from libs.group_projection import PROJECTION
from libs.logging import get_logger
from libs.projections import USERS_PROJECTION
from libs.storage.mongo import CollectionSpec, IndexSpec, MongoShards, delete_ids

log = get_logger(__name__)

PROJECTION_REBUILDS = Counter(
    "messenger_group_projection_rebuilds_total",
    "Rebuilds of the groups/blocks Redis projection from MongoDB (its sentinel was missing)",
)
PROJECTION_WRITES_REFUSED = Counter(
    "messenger_group_projection_writes_refused_total",
    "Projection writes refused because a rebuild reset the projection (batch redelivered)",
)

GROUPS = "groups"
MEMBERSHIPS = "memberships"
USER_GROUPS = "user_groups"
BLOCKS = "blocks"
DUPLICATE_KEY = 11000
_PIPELINE_CHUNK = 2000
#: A rebuild taking longer than this loses its lock (another instance may start one).
REBUILD_LOCK_S = 300

COLLECTIONS = (
    CollectionSpec(GROUPS, shard_key={"_id": "hashed"}),
    CollectionSpec(
        MEMBERSHIPS,
        indexes=(
            IndexSpec([("group_id", ASCENDING), ("user_id", ASCENDING)], "group_user", unique=True),
            IndexSpec([("group_id", ASCENDING), ("joined_at", ASCENDING)], "group_joined"),
        ),
        shard_key={"group_id": "hashed"},
    ),
    CollectionSpec(
        USER_GROUPS,
        indexes=(
            IndexSpec([("user_id", ASCENDING), ("group_id", ASCENDING)], "user_group", unique=True),
        ),
        shard_key={"user_id": "hashed"},
    ),
    CollectionSpec(
        BLOCKS,
        indexes=(
            IndexSpec(
                [("blocker_id", ASCENDING), ("blocked_id", ASCENDING)],
                "blocker_blocked",
                unique=True,
            ),
            # Who blocks a deleted account (scatter-gather on UserDeleted only).
            IndexSpec([("blocked_id", ASCENDING)], "blocked"),
        ),
        shard_key={"blocker_id": "hashed"},
        lookups=("_id", "blocked_id"),
    ),
)


@dataclass(frozen=True, slots=True)
class Member:
    role: Role
    joined_at: datetime


@dataclass(slots=True)
class GroupState:
    """A group as the handlers decide on it."""

    id: str
    name: str
    owner_id: str
    created_at: datetime
    members: dict[str, Member] = field(default_factory=dict)

    def view(self) -> GroupView:
        ordered = sorted(self.members.items(), key=lambda item: (item[1].joined_at, item[0]))
        return GroupView(
            id=self.id,
            name=self.name,
            owner_id=self.owner_id,
            created_at=self.created_at,
            members=tuple(
                MemberView(user_id=user_id, role=member.role, joined_at=member.joined_at)
                for user_id, member in ordered
            ),
        )


def _ignore_duplicates(exc: BulkWriteError) -> None:
    """Re-raise unless every write error is a duplicate key (an idempotent re-insert)."""
    errors = exc.details.get("writeErrors", [])
    if any(error.get("code") != DUPLICATE_KEY for error in errors) or not errors:
        raise exc


def _membership_id(group_id: str, user_id: str) -> str:
    return f"{group_id}/{user_id}"


def _user_group_id(user_id: str, group_id: str) -> str:
    return f"{user_id}/{group_id}"


def _block_id(blocker_id: str, blocked_id: str) -> str:
    return f"{blocker_id}/{blocked_id}"


class ProjectionLost(Exception):
    """The projection was reset under a write; the batch is retried after the rebuild."""


class GroupRepository:
    def __init__(self, mongo: MongoShards, redis: Redis, keys: RedisKeys) -> None:
        self.mongo = mongo
        self.redis = redis
        self.keys = keys

    async def bootstrap(self) -> None:
        from libs.storage.mongo import bootstrap_collections

        await bootstrap_collections(self.mongo, COLLECTIONS)

    # -- users (user_service's projection; read only) ------------------------------

    async def unknown_users(self, user_ids: Sequence[str]) -> list[str]:
        """Those of `user_ids` that are not live accounts, in one round trip.

        Same reading as libs.projections.user_exists (user_service's `user:<id>`
        hash, deleted "0"), batched; 503 while that projection is being rebuilt.
        """
        if not user_ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(self.keys.projection_ready(USERS_PROJECTION))
            for user_id in user_ids:
                pipe.hget(self.keys.user_profile(user_id), "deleted")
            users_ready, *deleted = await pipe.execute()
        if not users_ready:
            raise Unavailable(
                "account data is being rebuilt; retry shortly", code="projection_rebuilding"
            )
        return [user_id for user_id, flag in zip(user_ids, deleted, strict=True) if flag != "0"]

    # -- projection --------------------------------------------------------------

    async def projection_ready(self) -> bool:
        return bool(await self.redis.exists(self.keys.projection_ready(PROJECTION)))

    async def rebuild_projection(self, wait_s: float = 120.0) -> dict[str, int] | None:
        """Rewrite every group/block key from MongoDB, then set the sentinel.

        One instance at a time (a Redis lock); the others wait for its sentinel.
        Returns the counts rebuilt, or None when another instance did the work.
        """
        lock = self.redis.lock(
            self.keys.groups_rebuild_lock(), timeout=REBUILD_LOCK_S, blocking=False
        )
        if not await lock.acquire():
            deadline = time.monotonic() + wait_s
            while not await self.projection_ready():
                if time.monotonic() > deadline:
                    raise ProjectionLost("another instance's projection rebuild did not finish")
                await asyncio.sleep(0.2)
            return None
        try:
            if await self.projection_ready():
                return None  # rebuilt by another instance just before we got the lock
            return await self._rebuild()
        finally:
            with contextlib.suppress(LockError):
                await lock.release()

    async def _rebuild(self) -> dict[str, int]:
        # The sentinel goes first: writers WATCH it (see _project), and readers answer
        # 503 until it is back. Keys are dropped so that a group deleted since the
        # projection was lost does not linger.
        await self.redis.delete(self.keys.projection_ready(PROJECTION))
        await self._drop_projection_keys()
        groups: dict[str, dict[str, Any]] = {}
        for collection in self.mongo.collections(GROUPS):
            async for doc in collection.find({}):
                groups[doc["_id"]] = doc
        members: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for collection in self.mongo.collections(MEMBERSHIPS):
            async for doc in collection.find({}):
                # Orphans of a half-done create or delete (the group doc is written
                # last on create, first on delete) are not part of any group.
                if doc["group_id"] in groups:
                    members[doc["group_id"]].append(doc)
        blocks: dict[str, list[str]] = defaultdict(list)
        for collection in self.mongo.collections(BLOCKS):
            async for doc in collection.find({}):
                blocks[doc["blocker_id"]].append(doc["blocked_id"])

        commands: list[tuple[str, tuple[Any, ...]]] = []
        for group_id, doc in groups.items():
            commands.append(("hset", (self.keys.group(group_id), self._group_hash(doc))))
            group_members = members.get(group_id, [])
            if group_members:
                commands.append(
                    (
                        "hset",
                        (
                            self.keys.group_members(group_id),
                            {m["user_id"]: m["role"] for m in group_members},
                        ),
                    )
                )
                commands.append(
                    (
                        "hset",
                        (
                            self.keys.group_joined(group_id),
                            {m["user_id"]: m["joined_at"].isoformat() for m in group_members},
                        ),
                    )
                )
            for m in group_members:
                commands.append(("sadd", (self.keys.user_groups(m["user_id"]), group_id)))
        for blocker_id, blocked_ids in blocks.items():
            commands.append(("sadd", (self.keys.blocks(blocker_id), *blocked_ids)))
        for start in range(0, len(commands), _PIPELINE_CHUNK):
            async with self.redis.pipeline(transaction=False) as pipe:
                for name, args in commands[start : start + _PIPELINE_CHUNK]:
                    if name == "hset":
                        pipe.hset(args[0], mapping=args[1])
                    else:
                        pipe.sadd(*args)
                await pipe.execute()
        await self.redis.set(self.keys.projection_ready(PROJECTION), "1")
        counts = {
            "groups": len(groups),
            "memberships": sum(len(m) for m in members.values()),
            "blocks": sum(len(b) for b in blocks.values()),
        }
        PROJECTION_REBUILDS.inc()
        log.info("group projection rebuilt", **counts)
        return counts

    async def _drop_projection_keys(self) -> None:
        families = (
            self.keys.group("*"),
            self.keys.group_members("*"),
            self.keys.group_joined("*"),
            self.keys.user_groups("*"),
            self.keys.blocks("*"),
        )
        for pattern in families:
            batch: list[str] = []
            async for key in self.redis.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    await self.redis.delete(*batch)
                    batch.clear()
            if batch:
                await self.redis.delete(*batch)

    @staticmethod
    def _group_hash(doc: dict[str, Any]) -> dict[str, str]:
        return {
            "id": doc["_id"],
            "name": doc["name"],
            "owner_id": doc["owner_id"],
            "created_at": doc["created_at"].isoformat(),
        }

    # -- reads (from the projection; the caller made sure it is ready) ---------------

    async def load_group(self, group_id: str) -> GroupState | None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.group(group_id))
            pipe.hgetall(self.keys.group_members(group_id))
            pipe.hgetall(self.keys.group_joined(group_id))
            group, roles, joined = await pipe.execute()
        if not group:
            return None
        return GroupState(
            id=group_id,
            name=group["name"],
            owner_id=group["owner_id"],
            created_at=datetime.fromisoformat(group["created_at"]),
            members={
                user_id: Member(
                    role=role,
                    joined_at=datetime.fromisoformat(joined[user_id])
                    if user_id in joined
                    else datetime.fromisoformat(group["created_at"]),
                )
                for user_id, role in roles.items()
            },
        )

    async def groups_of(self, user_id: str) -> set[str]:
        return set(await self.redis.smembers(self.keys.user_groups(user_id)))

    async def blocked_by(self, blocker_id: str) -> set[str]:
        return set(await self.redis.smembers(self.keys.blocks(blocker_id)))

    async def blocked_either_way(self, user_id: str, others: list[str]) -> list[str]:
        """Those of `others` whom `user_id` blocks or who block `user_id` (one round trip)."""
        if not others:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.smembers(self.keys.blocks(user_id))
            for other in others:
                pipe.sismember(self.keys.blocks(other), user_id)
            own, *flags = await pipe.execute()
        return [o for o, flag in zip(others, flags, strict=True) if flag or o in own]

    async def blockers_of(self, blocked_id: str) -> list[str]:
        """Who blocks `blocked_id`: a scatter-gather over the blocked_id index."""
        blockers: list[str] = []
        for collection in self.mongo.collections(BLOCKS):
            async for doc in collection.find({"blocked_id": blocked_id}, {"blocker_id": 1}):
                blockers.append(doc["blocker_id"])
        return blockers

    async def _project(self, fill: Callable[[Pipeline], object]) -> None:
        """Apply `fill`'s commands atomically, and only to a complete projection.

        WATCHes the sentinel: a rebuild deletes it before it reads MongoDB, so a
        write that lands after that point fails here (the batch is redelivered and
        re-applied to the rebuilt projection) instead of being overwritten by the
        rebuild's older snapshot. Writes that land before it are in MongoDB already.
        """
        sentinel = self.keys.projection_ready(PROJECTION)
        async with self.redis.pipeline(transaction=True) as pipe:
            await pipe.watch(sentinel)
            if not await pipe.exists(sentinel):
                PROJECTION_WRITES_REFUSED.inc()
                raise ProjectionLost("the groups projection is missing; it is being rebuilt")
            pipe.multi()
            fill(pipe)
            try:
                await pipe.execute()
            except WatchError:
                PROJECTION_WRITES_REFUSED.inc()
                raise ProjectionLost("the groups projection was reset during a write") from None

    # -- group writes ----------------------------------------------------------------

    async def create_group(self, group: GroupState) -> None:
        """Memberships first, the group document last (it marks the group complete)."""
        await self._insert_members(group.id, group.members)
        with contextlib.suppress(DuplicateKeyError):  # a redelivered CreateGroup
            await self.mongo.collection_for(group.id, GROUPS).insert_one(
                {
                    "_id": group.id,
                    "name": group.name,
                    "owner_id": group.owner_id,
                    "created_at": group.created_at,
                }
            )

        def fill(pipe: Pipeline) -> None:
            pipe.hset(
                self.keys.group(group.id),
                mapping={
                    "id": group.id,
                    "name": group.name,
                    "owner_id": group.owner_id,
                    "created_at": group.created_at.isoformat(),
                },
            )
            self._project_members(pipe, group.id, group.members)

        await self._project(fill)

    async def rename_group(self, group_id: str, name: str) -> None:
        await self.mongo.collection_for(group_id, GROUPS).update_one(
            {"_id": group_id}, {"$set": {"name": name}}
        )
        await self._project(lambda pipe: pipe.hset(self.keys.group(group_id), "name", name))

    async def delete_group(self, group: GroupState) -> None:
        """The group document first (a rebuild ignores its orphaned memberships)."""
        await self.mongo.collection_for(group.id, GROUPS).delete_one({"_id": group.id})
        await self.mongo.collection_for(group.id, MEMBERSHIPS).delete_many({"group_id": group.id})
        await self._delete_user_groups(group.id, group.members)

        def fill(pipe: Pipeline) -> None:
            pipe.delete(
                self.keys.group(group.id),
                self.keys.group_members(group.id),
                self.keys.group_joined(group.id),
            )
            for user_id in group.members:
                pipe.srem(self.keys.user_groups(user_id), group.id)

        await self._project(fill)

    async def add_member(self, group_id: str, user_id: str, member: Member) -> None:
        await self._insert_members(group_id, {user_id: member})
        await self._project(lambda pipe: self._project_members(pipe, group_id, {user_id: member}))

    async def remove_member(self, group_id: str, user_id: str) -> None:
        await self.mongo.collection_for(group_id, MEMBERSHIPS).delete_one(
            {"_id": _membership_id(group_id, user_id)}
        )
        await self._delete_user_groups(group_id, [user_id])

        def fill(pipe: Pipeline) -> None:
            pipe.hdel(self.keys.group_members(group_id), user_id)
            pipe.hdel(self.keys.group_joined(group_id), user_id)
            pipe.srem(self.keys.user_groups(user_id), group_id)

        await self._project(fill)

    async def set_role(self, group_id: str, user_id: str, role: Role) -> None:
        await self.mongo.collection_for(group_id, MEMBERSHIPS).update_one(
            {"_id": _membership_id(group_id, user_id)}, {"$set": {"role": role}}
        )
        await self._project(
            lambda pipe: pipe.hset(self.keys.group_members(group_id), user_id, role)
        )

    async def hand_over(self, group_id: str, new_owner_id: str) -> None:
        """Make `new_owner_id` the owner (the previous owner is removed separately)."""
        await self.mongo.collection_for(group_id, MEMBERSHIPS).update_one(
            {"_id": _membership_id(group_id, new_owner_id)}, {"$set": {"role": "owner"}}
        )
        await self.mongo.collection_for(group_id, GROUPS).update_one(
            {"_id": group_id}, {"$set": {"owner_id": new_owner_id}}
        )

        def fill(pipe: Pipeline) -> None:
            pipe.hset(self.keys.group_members(group_id), new_owner_id, "owner")
            pipe.hset(self.keys.group(group_id), "owner_id", new_owner_id)

        await self._project(fill)

    async def _insert_members(self, group_id: str, members: dict[str, Member]) -> None:
        if not members:
            return
        try:
            await self.mongo.collection_for(group_id, MEMBERSHIPS).insert_many(
                [
                    {
                        "_id": _membership_id(group_id, user_id),
                        "group_id": group_id,
                        "user_id": user_id,
                        "role": member.role,
                        "joined_at": member.joined_at,
                    }
                    for user_id, member in members.items()
                ],
                ordered=False,
            )
        except BulkWriteError as exc:
            _ignore_duplicates(exc)
        by_shard: dict[int, list[str]] = self.mongo.router.group_by_shard(list(members))
        for user_ids in by_shard.values():
            collection = self.mongo.collection_for(user_ids[0], USER_GROUPS)
            try:
                await collection.insert_many(
                    [
                        {
                            "_id": _user_group_id(user_id, group_id),
                            "user_id": user_id,
                            "group_id": group_id,
                            "joined_at": members[user_id].joined_at,
                        }
                        for user_id in user_ids
                    ],
                    ordered=False,
                )
            except BulkWriteError as exc:
                _ignore_duplicates(exc)

    async def _delete_user_groups(self, group_id: str, user_ids: Iterable[str]) -> None:
        by_shard = self.mongo.router.group_by_shard(list(user_ids))
        for ids in by_shard.values():
            await delete_ids(
                self.mongo.collection_for(ids[0], USER_GROUPS),
                [_user_group_id(user_id, group_id) for user_id in ids],
            )

    def _project_members(self, pipe: Any, group_id: str, members: dict[str, Member]) -> None:
        if not members:
            return
        pipe.hset(
            self.keys.group_members(group_id),
            mapping={user_id: member.role for user_id, member in members.items()},
        )
        pipe.hset(
            self.keys.group_joined(group_id),
            mapping={user_id: member.joined_at.isoformat() for user_id, member in members.items()},
        )
        for user_id in members:
            pipe.sadd(self.keys.user_groups(user_id), group_id)

    # -- blocks ------------------------------------------------------------------

    async def block(self, blocker_id: str, blocked_id: str, at: datetime) -> None:
        with contextlib.suppress(DuplicateKeyError):  # already blocked: idempotent
            await self.mongo.collection_for(blocker_id, BLOCKS).insert_one(
                {
                    "_id": _block_id(blocker_id, blocked_id),
                    "blocker_id": blocker_id,
                    "blocked_id": blocked_id,
                    "created_at": at,
                }
            )
        await self._project(lambda pipe: pipe.sadd(self.keys.blocks(blocker_id), blocked_id))

    async def unblock(self, blocker_id: str, blocked_ids: Sequence[str]) -> None:
        if not blocked_ids:
            return
        await delete_ids(
            self.mongo.collection_for(blocker_id, BLOCKS),
            [_block_id(blocker_id, b) for b in blocked_ids],
        )
        await self._project(lambda pipe: pipe.srem(self.keys.blocks(blocker_id), *blocked_ids))
