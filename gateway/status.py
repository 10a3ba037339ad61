"""Delivery status of messages as their sender sees it (docs/realtime.md).

`annotate_status` sets, on each message the caller sent, its status computed
from the recipients' watermarks (libs/receipt_projection.py, owned by
delivery_service), and leaves None on messages the caller received:
- direct: "read" when the recipient's read watermark for the conversation is at
  or past the message's seq, else "delivered" when its delivered watermark is
  (read implies delivered), else "sent";
- group: `delivered_count` / `read_count` of the members (but the sender) at or
  past it, and `status` "read"/"delivered" once every such member is, else "sent".
Blocks (docs/realtime.md): a direct message between two users of whom one
blocks the other stays "sent"; in a group, members the caller blocks are not
counted (their reads and deliveries never reach the caller).
Cost grows with the receivers and members on the page, not with messages x
members: one Redis round trip for the watermarks, one for the group members
and the blocks.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from gateway.keys import KEYS, MONGO, REDIS
from libs.contracts.messages import MessageView
from libs.errors import Unavailable
from libs.group_projection import PROJECTION as GROUPS_PROJECTION
from libs.receipt_projection import watermarks_of


async def annotate_status(
    app: web.Application, caller_id: str, messages: Sequence[MessageView]
) -> None:
    own = [m for m in messages if m.sender_id == caller_id]
    for message in messages:
        if message.sender_id != caller_id:
            message.status = None
    if not own:
        return
    redis, keys = app[REDIS], app[KEYS]
    marks = await watermarks_of(redis, keys, app[MONGO], (m.receiver.id for m in own))
    groups = list(dict.fromkeys(m.receiver.id for m in own if m.receiver.kind == "group"))
    peers = list(dict.fromkeys(m.receiver.id for m in own if m.receiver.kind == "user"))
    members: dict[str, list[str]] = {}
    async with redis.pipeline(transaction=False) as pipe:
        pipe.exists(keys.projection_ready(GROUPS_PROJECTION))
        pipe.smembers(keys.blocks(caller_id))
        for peer in peers:
            pipe.sismember(keys.blocks(peer), caller_id)
        for group_id in groups:
            pipe.hkeys(keys.group_members(group_id))
        ready, own_blocks, *rows = await pipe.execute()
    if groups and not ready:
        raise Unavailable("group data is being rebuilt; retry shortly", code="unavailable")
    blocked_peers = {
        peer
        for peer, blocks_caller in zip(peers, rows[: len(peers)], strict=True)
        if blocks_caller or peer in own_blocks
    }
    members = dict(zip(groups, rows[len(peers) :], strict=True))
    for message in own:
        mark = marks[message.receiver.id]
        seq = message.seq
        if message.receiver.kind == "user":
            # The recipient's read watermark of this conversation is keyed by its peer.
            if message.receiver.id in blocked_peers:
                message.status = "sent"
            elif mark.read.get(caller_id, 0) >= seq:
                message.status = "read"
            elif mark.delivered_seq(message.receiver.id, caller_id) >= seq:
                message.status = "delivered"
            else:
                message.status = "sent"
            continue
        readers = [
            u
            for u in members.get(message.receiver.id, [])
            if u != caller_id and u not in own_blocks
        ]
        delivered = sum(mark.delivered_seq(u, u) >= seq for u in readers)
        read = sum(mark.read.get(u, 0) >= seq for u in readers)
        message.delivered_count = delivered
        message.read_count = read
        if readers and read == len(readers):
            message.status = "read"
        elif readers and delivered == len(readers):
            message.status = "delivered"
        else:
            message.status = "sent"
