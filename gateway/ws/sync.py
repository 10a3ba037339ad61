"""The WebSocket `resume` frame: replay every log entry (messages and events) after
the client's seqs, holding live pushes meanwhile, then `resumed`; the seam has no
gap and no duplicate (a socket never writes the same entry id twice)."""

from __future__ import annotations

from typing import Annotated, Literal

from aiohttp import web
from pydantic import Field

from gateway.auth import Principal
from gateway.history import read_sync
from gateway.keys import KEYS, REDIS
from gateway.sockets import Connection
from gateway.views import render_views
from gateway.ws.frames import ClientFrame, FrameHandler
from libs.contracts.messages import MessageView
from libs.group_projection import user_groups

RESUME_PAGE = 500
RESUME_MAX_MESSAGES = 5000


class ResumeFrame(ClientFrame):
    """Replay what was missed: every entry after these seqs (receiver_id -> last seq
    seen; receivers left out start at 0), then live pushes, with no gap or duplicate
    at the seam. Answered by {"type": "resumed", "ref", "seqs", "complete"}."""

    type: Literal["resume"]
    seqs: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict, max_length=10_000)


async def on_resume(
    app: web.Application, conn: Connection, principal: Principal, frame: ResumeFrame
) -> None:
    groups = await user_groups(app[REDIS], app[KEYS], principal.user_id)
    blocked = await app[REDIS].smembers(app[KEYS].blocks(principal.user_id))
    receivers = [principal.user_id, *sorted(groups)]
    seqs = {r: frame.seqs.get(r, 0) for r in receivers}
    conn.held = []
    replayed = 0
    more = True
    try:
        while more and replayed < RESUME_MAX_MESSAGES:
            page, seqs, more = await read_sync(
                app, receivers, seqs, RESUME_PAGE, hidden_actors=blocked
            )
            messages = [e for e in page if isinstance(e, MessageView)]
            await render_views(app, principal.user_id, messages)
            for entry in page:
                if isinstance(entry, MessageView):
                    conn.replay(entry.model_dump(mode="json"))
                else:
                    conn.replay_frame(entry.frame())
            replayed += len(page)
            if not page:
                break
    finally:
        conn.release()
    conn.send_frame(
        {
            "type": "resumed",
            "ref": frame.ref,
            "seqs": {r: max(seqs.get(r, 0), conn.seen.get(r, 0)) for r in receivers},
            # False past RESUME_MAX_MESSAGES: the client pages the rest with GET /v1/sync.
            "complete": not more,
        }
    )


FRAMES: dict[str, tuple[type[ClientFrame], FrameHandler]] = {"resume": (ResumeFrame, on_resume)}
