"""Everything user_service stores: accounts in MongoDB, sessions and projections in Redis.

MongoDB (the source of truth):
- `users`, routed by user_id, `_id` = user_id: {username, display_name,
  password_hash, created_at, deleted, deleted_at}. Deleted accounts stay as
  tombstones (deleted: true).
- `usernames`, routed by the lower-cased username itself, `_id` = that name:
  {user_id, claimed_at}. Its unique `_id` is what makes a name unique across
  shards: a registration first claims the name there, then writes the user. A
  claim by the same user_id is found again on a retry (idempotent); a claim by
  another user_id is a 409. Deleting an account releases its name.

Redis (README.md, Architecture, libs/contracts/keys.py):
- sessions: `session:<sha256(token)>` {user_id, created_at, expires_at, idle_s}
  with TTL = idle timeout, indexed by `user_sessions:<user_id>`; a revocation
  deletes them and publishes their hashes on `session_revocations` in the same
  transaction (gateways drop them from their caches and close their sockets);
- the users projection others read (`user:<id>`, `username:<lower>`, the
  `projection_ready("users")` sentinel), written before each reply and rebuilt
  from MongoDB when the sentinel is missing; a rebuild only fills keys that are
  absent, so it never overwrites what a handler wrote meanwhile;
- `user_cred:<id>` {password_hash}: a login cache so that logging in does not
  read MongoDB (which scans on FerretDB); filled from MongoDB on a miss.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError
from redis.asyncio import Redis

from libs.contracts.keys import RedisKeys
from libs.errors import Conflict
from libs.projections import USERS_PROJECTION
from libs.storage.mongo import CollectionSpec, MongoShards

USERS = "users"
USERNAMES = "usernames"
COLLECTIONS = (
    CollectionSpec(USERS, shard_key={"_id": "hashed"}),
    CollectionSpec(USERNAMES, shard_key={"_id": "hashed"}),
)
CREDENTIALS_TTL_S = 7 * 24 * 3600

# Fill a projection hash only if it does not exist yet (rebuilds never overwrite).
_HSET_IF_ABSENT = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], unpack(ARGV))
  return 1
end
return 0
"""
# Delete a key only while it still holds ARGV[1] (a name now claimed by someone else stays).
_DEL_IF_EQUALS = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: str
    username: str
    display_name: str
    created_at: datetime
    password_hash: str
    deleted: bool = False
    #: The id of the command that last changed the password (answers its redelivery).
    password_change_id: str | None = None

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> UserRecord:
        created_at = doc["created_at"]
        if created_at.tzinfo is None:
            created_at = created_at.replace(tzinfo=UTC)
        return cls(
            id=doc["_id"],
            username=doc["username"],
            display_name=doc["display_name"],
            created_at=created_at,
            password_hash=doc["password_hash"],
            deleted=bool(doc.get("deleted", False)),
            password_change_id=doc.get("password_change_id"),
        )

    def profile(self) -> dict[str, Any]:
        """What the API shows the account's owner."""
        return {
            "id": self.id,
            "username": self.username,
            "display_name": self.display_name,
            "created_at": self.created_at,
        }


@dataclass(frozen=True, slots=True)
class NewSession:
    token: str
    token_hash: str
    expires_at: float


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class UserRepository:
    def __init__(self, shards: MongoShards, redis: Redis, keys: RedisKeys) -> None:
        self.shards = shards
        self.redis = redis
        self.keys = keys
        self._hset_if_absent = redis.register_script(_HSET_IF_ABSENT)
        self._del_if_equals = redis.register_script(_DEL_IF_EQUALS)

    # -- accounts (MongoDB) --------------------------------------------------------------

    async def claim_username(self, username: str, user_id: str) -> None:
        """Reserve `username` for `user_id` across all shards; Conflict if it is taken."""
        claims = self.shards.collection_for(username, USERNAMES)
        try:
            await claims.insert_one(
                {"_id": username, "user_id": user_id, "claimed_at": datetime.now(UTC)}
            )
        except DuplicateKeyError:
            holder = await claims.find_one({"_id": username}, {"user_id": 1})
            if holder is None or holder.get("user_id") != user_id:
                raise Conflict(
                    "this username is taken", code="username_taken", details={"field": "username"}
                ) from None

    async def release_username(self, username: str, user_id: str) -> None:
        claims = self.shards.collection_for(username, USERNAMES)
        await claims.delete_one({"_id": username, "user_id": user_id})

    async def insert_user(self, user: UserRecord) -> UserRecord:
        """Store a new account; a retry of the same registration returns the stored one."""
        users = self.shards.collection_for(user.id, USERS)
        try:
            await users.insert_one(
                {
                    "_id": user.id,
                    "username": user.username,
                    "display_name": user.display_name,
                    "password_hash": user.password_hash,
                    "created_at": user.created_at,
                    "deleted": False,
                }
            )
        except DuplicateKeyError:
            stored = await self.load_user(user.id)
            if stored is None or stored.username != user.username:
                raise Conflict("this account id is already used", code="id_taken") from None
            return stored
        return user

    async def load_user(self, user_id: str) -> UserRecord | None:
        doc = await self.shards.collection_for(user_id, USERS).find_one({"_id": user_id})
        return UserRecord.from_document(doc) if doc else None

    async def update_user(
        self,
        user_id: str,
        *,
        display_name: str | None,
        password_hash: str | None,
        change_id: str | None = None,
    ) -> UserRecord | None:
        """Apply a profile change to a live account; None when it is gone. A password
        change records `change_id`, the command's id, so its redelivery is recognised."""
        changes: dict[str, Any] = {}
        if display_name is not None:
            changes["display_name"] = display_name
        if password_hash is not None:
            changes["password_hash"] = password_hash
            changes["password_change_id"] = change_id
        users = self.shards.collection_for(user_id, USERS)
        if not changes:
            doc = await users.find_one({"_id": user_id, "deleted": False})
        else:
            doc = await users.find_one_and_update(
                {"_id": user_id, "deleted": False},
                {"$set": changes},
                return_document=ReturnDocument.AFTER,
            )
        return UserRecord.from_document(doc) if doc else None

    async def mark_deleted(self, user_id: str, deleted_at: datetime) -> UserRecord | None:
        """Tombstone the account (idempotent); None when it never existed."""
        users = self.shards.collection_for(user_id, USERS)
        doc = await users.find_one_and_update(
            {"_id": user_id, "deleted": False},
            {"$set": {"deleted": True, "deleted_at": deleted_at}},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            doc = await users.find_one({"_id": user_id})
        return UserRecord.from_document(doc) if doc else None

    # -- login lookups: Redis first, MongoDB when the projection is not there ------------

    async def user_id_for_login(self, username: str) -> str | None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(self.keys.projection_ready(USERS_PROJECTION))
            pipe.get(self.keys.username(username))
            ready, user_id = await pipe.execute()
        if ready:
            return user_id
        claim = await self.shards.collection_for(username, USERNAMES).find_one(
            {"_id": username}, {"user_id": 1}
        )
        return claim.get("user_id") if claim else None

    async def password_hash(self, user_id: str) -> str | None:
        """The live account's password hash (cached in Redis), or None."""
        key = self.keys.user_credentials(user_id)
        cached = await self.redis.hget(key, "password_hash")
        if cached:
            return cached
        user = await self.load_user(user_id)
        if user is None or user.deleted:
            return None
        await self.cache_password_hash(user_id, user.password_hash)
        return user.password_hash

    async def cache_password_hash(self, user_id: str, password_hash: str) -> None:
        key = self.keys.user_credentials(user_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, "password_hash", password_hash)
            pipe.expire(key, CREDENTIALS_TTL_S)
            await pipe.execute()

    async def forget_password_hash(self, user_id: str) -> None:
        await self.redis.delete(self.keys.user_credentials(user_id))

    async def is_deleted(self, user_id: str) -> bool:
        return await self.redis.hget(self.keys.user_profile(user_id), "deleted") == "1"

    # -- sessions --------------------------------------------------------------------------

    async def open_session(self, user_id: str, *, idle_s: int, absolute_s: int) -> NewSession:
        token = secrets.token_urlsafe(32)  # 256 bits
        hashed = token_hash(token)
        now = time.time()
        expires_at = now + absolute_s
        key = self.keys.session(hashed)
        index = self.keys.user_sessions(user_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                key,
                mapping={
                    "user_id": user_id,
                    "created_at": repr(now),
                    "expires_at": repr(expires_at),
                    "idle_s": str(idle_s),
                },
            )
            pipe.expire(key, min(idle_s, absolute_s))
            pipe.sadd(index, hashed)
            # The index lives as long as its longest-lived session.
            pipe.expire(index, absolute_s, nx=True)
            pipe.expire(index, absolute_s, gt=True)
            await pipe.execute()
        return NewSession(token, hashed, expires_at)

    async def close_session(self, user_id: str, hashed: str) -> None:
        key = self.keys.session(hashed)
        if await self.redis.hget(key, "user_id") not in (None, user_id):
            return  # not this user's session: nothing of theirs to revoke
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.srem(self.keys.user_sessions(user_id), hashed)
            pipe.publish(self.keys.session_revocations(), json.dumps([hashed]))
            await pipe.execute()

    async def close_sessions(self, user_id: str, *, keep: str | None = None) -> int:
        """Revoke every session of `user_id` but `keep`; returns how many were revoked."""
        index = self.keys.user_sessions(user_id)
        doomed = [h for h in await self.redis.smembers(index) if h != keep]
        if not doomed:
            return 0
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(*(self.keys.session(h) for h in doomed))
            pipe.srem(index, *doomed)
            pipe.publish(self.keys.session_revocations(), json.dumps(doomed))
            await pipe.execute()
        return len(doomed)

    # -- the users projection --------------------------------------------------------------

    def _profile_fields(self, user: UserRecord) -> dict[str, str]:
        return {
            "id": user.id,
            "username": user.username,
            "display_name": user.display_name,
            "created_at": user.created_at.isoformat(),
            "deleted": "1" if user.deleted else "0",
        }

    async def project(self, user: UserRecord) -> None:
        """Write the user's projection (authoritative: called by handlers before replying)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.user_profile(user.id), mapping=self._profile_fields(user))
            if not user.deleted:
                pipe.set(self.keys.username(user.username), user.id)
            await pipe.execute()
        if user.deleted:
            await self._del_if_equals(keys=[self.keys.username(user.username)], args=[user.id])

    async def projection_ready(self) -> bool:
        return bool(await self.redis.exists(self.keys.projection_ready(USERS_PROJECTION)))

    async def rebuild_projection(self, lock_ttl_s: int = 120) -> int | None:
        """Refill the projection from every shard and set its sentinel.

        Returns the number of accounts seen, or None when another instance holds
        the rebuild lock. Keys that exist are left alone: whatever a handler wrote
        while the rebuild was reading is newer than the rebuild's snapshot.
        """
        lock = self.keys.users_projection_lock()
        owner = secrets.token_hex(8)
        if not await self.redis.set(lock, owner, nx=True, ex=lock_ttl_s):
            return None
        try:
            seen = 0
            for users in self.shards.collections(USERS):
                batch: list[UserRecord] = []
                async for doc in users.find({}, {"password_hash": 0}):
                    batch.append(UserRecord.from_document({**doc, "password_hash": ""}))
                    if len(batch) >= 500:
                        await self._fill(batch)
                        seen += len(batch)
                        batch = []
                if batch:
                    await self._fill(batch)
                    seen += len(batch)
            await self.redis.set(self.keys.projection_ready(USERS_PROJECTION), "1")
            return seen
        finally:
            await self._del_if_equals(keys=[lock], args=[owner])

    async def _fill(self, users: list[UserRecord]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for user in users:
                fields = self._profile_fields(user)
                args = [item for pair in fields.items() for item in pair]
                await self._hset_if_absent(
                    keys=[self.keys.user_profile(user.id)], args=args, client=pipe
                )
                if not user.deleted:
                    pipe.set(self.keys.username(user.username), user.id, nx=True)
            await pipe.execute()
