"""The caller's rendering of message views (reactions, reply previews) in the gateway:
libs.message_views.render with this app's Redis, keys and shards."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from gateway.keys import KEYS, MONGO, REDIS
from libs.contracts.messages import MessageView
from libs.message_views import render


async def render_views(app: web.Application, caller_id: str, views: Sequence[MessageView]) -> None:
    await render(app[REDIS], app[KEYS], app[MONGO], caller_id, views)
