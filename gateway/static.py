"""Serving a folder's files (the web client, Swagger UI's assets) from a GET route.

aiohttp's own static resource answers a missing file with an empty 404; this
handler raises HTTPNotFound instead, so the error middleware answers it in the
documented JSON error shape like every other 404. Paths are resolved and must
stay inside the folder (no `..` escape); only regular files are served.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def folder_handler(root: Path, headers: dict[str, str] | None = None) -> Handler:
    """A handler for a route with a `{path:.*}` part, answering files under `root`."""
    base = root.resolve()

    async def serve(request: web.Request) -> web.StreamResponse:
        target = (base / request.match_info["path"]).resolve()
        if not target.is_relative_to(base) or not target.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(target, headers=headers)

    return serve
