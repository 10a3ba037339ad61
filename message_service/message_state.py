"""The current state of accepted messages, and the rules of changing it.

A message's state lives on its ledger entry (`accepted`, `_id = "<receiver>:<seq>"`,
message_service's own collection, repository.LEDGER): besides the accepted
message it holds `edited_at`, `deleted`, `reactors` ({emoji: [user ids]}) and
`applied` (the ids of the last changes applied, so a redelivered change is
recognised and answered without being applied twice). A delete purges the
content, reactions and reply reference from it.

Only message_service changes it, and only the instance that owns the message's
receiver partition, in offset order: so an edit racing a delete is decided once
(whichever command is first in the partition wins: an edit after the delete is
409, a delete after the edit leaves a tombstone). `MessageStates` is the only code
reading or writing these fields; `apply_change` is the rule book.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import UpdateOne

from libs.contracts.conversations import ChangeMessagePayload
from libs.contracts.messages import MessageView, from_millis, to_millis
from libs.errors import Conflict, DomainError, Forbidden, NotFound
from libs.storage.mongo import MongoShards, bulk_update
from message_service.repository import LEDGER, accepted_from_ledger

#: Change ids remembered per message (redeliveries are recognised among them).
APPLIED_KEPT = 64


def ledger_id(receiver_id: str, seq: int) -> str:
    return f"{receiver_id}:{seq}"


@dataclass(slots=True)
class Outcome:
    """What one change did: the message after it, and whether anything changed
    (False: a no-op such as a repeated reaction, or a redelivered change)."""

    view: MessageView
    changed: bool
    replayed: bool = False


def view_of(doc: dict[str, Any]) -> MessageView:
    """The stored view (with reactors) of a ledger entry in its current state."""
    record = accepted_from_ledger(doc)
    view = MessageView.of(record)  # type: ignore[arg-type]
    view.edited_at = doc.get("edited_at")
    if view.edited_at is not None and view.edited_at.tzinfo is None:
        view.edited_at = view.edited_at.replace(tzinfo=UTC)
    view.deleted = bool(doc.get("deleted"))
    view.reactors = {e: list(u) for e, u in (doc.get("reactors") or {}).items() if u}
    if view.deleted:
        view.content = ""
        view.reactors = {}
        view.reply_to = None
        view.attachments = []
    return view


def apply_change(
    doc: dict[str, Any] | None, change: ChangeMessagePayload, *, edit_window_s: float
) -> Outcome:
    """Apply `change` to the ledger entry `doc` in place; raise the refusal otherwise."""
    if doc is None or doc.get("entry") == "event" or doc.get("message_id") != change.message_id:
        raise NotFound("no such message", code="message_not_found")
    applied: list[str] = doc.setdefault("applied", [])
    if change.change_id in applied:
        return Outcome(view_of(doc), changed=False, replayed=True)
    deleted = bool(doc.get("deleted"))
    changed = True
    if change.action == "delete":
        if deleted:
            changed = False
        else:
            doc.update(deleted=True, content="", reactors={}, reply_to=None)
    elif deleted:
        raise Conflict("the message was deleted", code="message_deleted")
    elif change.action == "edit":
        if doc["sender_id"] != change.actor_id:
            raise Forbidden("only the sender may edit a message", code="not_the_sender")
        created = doc["created_at"]
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        if change.created_at - created > timedelta(seconds=edit_window_s):
            raise Forbidden(
                "the message is too old to edit",
                code="edit_window_passed",
                details={"edit_window_s": edit_window_s},
            )
        assert change.content is not None
        doc["content"] = change.content
        doc["edited_at"] = from_millis(to_millis(change.created_at))
    else:
        assert change.emoji is not None
        reactors: dict[str, list[str]] = doc.setdefault("reactors", {})
        users = reactors.setdefault(change.emoji, [])
        if change.action == "react" and change.actor_id not in users:
            users.append(change.actor_id)
        elif change.action == "unreact" and change.actor_id in users:
            users.remove(change.actor_id)
        else:
            changed = False
        if not users:
            reactors.pop(change.emoji, None)
    if changed:
        applied.append(change.change_id)
        del applied[:-APPLIED_KEPT]
    return Outcome(view_of(doc), changed=changed)


def refusal(error: Exception) -> DomainError | None:
    return error if isinstance(error, DomainError) else None


class MessageStates:
    """Reads and writes the state fields of ledger entries, by `_id` only.

    The entries of recent messages are also kept in memory (`memory`, LRU): only
    the instance owning a receiver's partition changes its messages, so while it
    owns it its memory is the truth; it is cleared whenever partitions move and
    after any failed batch (the retry reads MongoDB). A change to a message in
    memory costs no read.
    """

    def __init__(self, shards: MongoShards, *, memory_size: int = 20_000) -> None:
        self.shards = shards
        self.memory: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.memory_size = memory_size

    def remember(self, docs: Iterable[dict[str, Any]]) -> None:
        for doc in docs:
            self.memory[doc["_id"]] = doc
            self.memory.move_to_end(doc["_id"])
        while len(self.memory) > self.memory_size:
            self.memory.popitem(last=False)

    def forget(self) -> None:
        self.memory.clear()

    async def load(self, targets: Iterable[tuple[str, int]]) -> dict[str, dict[str, Any]]:
        """Ledger entries of (receiver_id, seq) pairs, by ledger id: from memory, else
        one `_id` equality lookup each, concurrently (the one filter FerretDB pushes
        down to its storage; an `$in` is a scan of the collection there)."""
        wanted = list(dict.fromkeys(targets))
        found = {
            ledger_id(r, s): self.memory[ledger_id(r, s)]
            for r, s in wanted
            if ledger_id(r, s) in self.memory
        }
        missing = [(r, s) for r, s in wanted if ledger_id(r, s) not in found]
        docs = await asyncio.gather(
            *(
                self.shards.collection_for(receiver_id, LEDGER).find_one(
                    {"_id": ledger_id(receiver_id, seq)}
                )
                for receiver_id, seq in missing
            )
        )
        loaded = [doc for doc in docs if doc is not None]
        self.remember(loaded)
        found.update((doc["_id"], doc) for doc in loaded)
        return found

    async def save(self, docs: Sequence[dict[str, Any]]) -> None:
        """Write the state fields (and the purge of a delete) of changed entries."""
        by_shard: dict[int, list[UpdateOne]] = {}
        for doc in docs:
            fields = {
                "content": doc.get("content", ""),
                "edited_at": doc.get("edited_at"),
                "deleted": bool(doc.get("deleted")),
                "reactors": doc.get("reactors") or {},
                "reply_to": doc.get("reply_to"),
                "applied": doc.get("applied", []),
            }
            index = self.shards.shard_index(doc["receiver_id"])
            by_shard.setdefault(index, []).append(UpdateOne({"_id": doc["_id"]}, {"$set": fields}))
        for index, operations in by_shard.items():
            await bulk_update(self.shards.databases[index][LEDGER], operations)


def now_ms_datetime() -> datetime:
    return from_millis(to_millis(datetime.now(UTC)))
