"""Push targets and the server's VAPID key: their collections, their writers and readers.

The gateway registers, lists and removes a user's targets; the notifier reads
them and removes those that answer 404 or 410. Two collections:

- `push_targets`: one document per user on the user's shard, so that every read
  is an `_id` equality (pushed down by FerretDB; a user's targets are few):
      {_id: user_id, targets: {<target_id>: {id, kind, created_at,
        endpoint, p256dh, auth          (kind "webpush": a browser subscription)
        url, secret                     (kind "webhook")}}}
  A target's id is derived from the user and its endpoint or URL, so registering
  the same one again replaces it instead of adding a copy.
- `vapid_keys`: `{_id: "current", private_pem, public_key}` on the shard that owns
  "vapid": the key pair this deployment signs Web Push requests with (RFC 8292),
  made by whichever process needs it first (a unique _id settles a race) unless
  NOTIFIER_VAPID_PRIVATE_KEY is set. The public key (uncompressed P-256 point,
  base64url) is what browsers subscribe with.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid
from pymongo.errors import DuplicateKeyError

from libs.storage.mongo import CollectionSpec, MongoShards

TARGETS = "push_targets"
VAPID_KEYS = "vapid_keys"
_VAPID_ID = "current"
_VAPID_ROUTE = "vapid"

COLLECTIONS = (
    CollectionSpec(TARGETS, shard_key={"_id": "hashed"}),
    CollectionSpec(VAPID_KEYS),
)


def target_id(user_id: str, address: str) -> str:
    return "pt" + hashlib.sha256(f"{user_id}\n{address}".encode()).hexdigest()[:30]


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PushTargets:
    def __init__(self, shards: MongoShards) -> None:
        self.shards = shards

    def _collection(self, user_id: str) -> Any:
        return self.shards.collection_for(user_id, TARGETS)

    async def list(self, user_id: str) -> list[dict[str, Any]]:
        doc = await self._collection(user_id).find_one({"_id": user_id})
        targets = list((doc or {}).get("targets", {}).values())
        return sorted(targets, key=lambda t: (t["created_at"], t["id"]))

    async def add_webpush(
        self, user_id: str, endpoint: str, p256dh: str, auth: str
    ) -> dict[str, Any]:
        return await self._add(
            user_id,
            {"kind": "webpush", "endpoint": endpoint, "p256dh": p256dh, "auth": auth},
            endpoint,
        )

    async def add_webhook(self, user_id: str, url: str, secret: str) -> dict[str, Any]:
        return await self._add(user_id, {"kind": "webhook", "url": url, "secret": secret}, url)

    async def _add(self, user_id: str, fields: dict[str, Any], address: str) -> dict[str, Any]:
        target = {
            "id": target_id(user_id, address),
            "created_at": datetime.now(UTC),
            **fields,
        }
        await self._collection(user_id).update_one(
            {"_id": user_id}, {"$set": {f"targets.{target['id']}": target}}, upsert=True
        )
        return target

    async def remove(self, user_id: str, target: str) -> bool:
        """Remove one target; False when the user has no such target."""
        done = await self._collection(user_id).update_one(
            {"_id": user_id, f"targets.{target}": {"$exists": True}},
            {"$unset": {f"targets.{target}": ""}},
        )
        return done.modified_count == 1


class VapidKeys:
    """The deployment's VAPID key pair (see the module docstring)."""

    def __init__(self, shards: MongoShards, configured_private_key: str = "") -> None:
        self.shards = shards
        self.configured = configured_private_key
        self._vapid: Vapid | None = None

    async def load(self) -> Vapid:
        if self._vapid is not None:
            return self._vapid
        if self.configured:
            self._vapid = Vapid.from_string(private_key=self.configured)
            return self._vapid
        collection = self.shards.collection_for(_VAPID_ROUTE, VAPID_KEYS)
        doc = await collection.find_one({"_id": _VAPID_ID})
        if doc is None:
            fresh = Vapid()
            fresh.generate_keys()
            # Another process may make it first (duplicate _id): then theirs is used.
            with contextlib.suppress(DuplicateKeyError):
                await collection.insert_one(
                    {
                        "_id": _VAPID_ID,
                        "private_pem": fresh.private_pem().decode(),
                        "public_key": public_key_of(fresh),
                        "created_at": datetime.now(UTC),
                    }
                )
            doc = await collection.find_one({"_id": _VAPID_ID})
            assert doc is not None
        self._vapid = Vapid.from_pem(doc["private_pem"].encode())
        return self._vapid

    async def public_key(self) -> str:
        return public_key_of(await self.load())


def public_key_of(vapid: Vapid) -> str:
    """The applicationServerKey browsers subscribe with: the raw P-256 point, base64url."""
    raw = vapid.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return b64url(raw)
