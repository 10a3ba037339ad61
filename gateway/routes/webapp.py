"""Gateway endpoints: the web client's static files (gateway/web/).

GET / answers the app's page; /app/... its stylesheet and JavaScript modules
(plain ES modules, no build step), served as files (gateway.static); /sw.js its
service worker (Web Push notifications), at the root so that its scope is the
whole app. Nothing is taken from a CDN. Responses carry `Cache-Control: no-cache` (a browser
revalidates with If-Modified-Since, so a new deploy is picked up at the next
load) and the page a Content-Security-Policy that allows only this origin. These are files,
not API operations, so they are not in the OpenAPI document.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from gateway.api import Routes
from gateway.settings import GatewaySettings
from gateway.static import folder_handler

routes = Routes(tag="webapp")

WEB_ROOT = Path(__file__).resolve().parent.parent / "web"
APP_PREFIX = "/app"

#: The app needs nothing but its own origin: scripts, styles, fetch and the WebSocket.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(
        WEB_ROOT / "index.html",
        headers={
            "Cache-Control": "no-cache",
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


FILE_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}

#: The service worker's scope is the folder it is served from: "/" covers the app. The
#: browser checks a new version at every registration and navigation (no-cache, and it
#: skips the HTTP cache for worker scripts anyway).
SERVICE_WORKER_HEADERS = {
    **FILE_HEADERS,
    "Content-Type": "text/javascript; charset=utf-8",
    "Service-Worker-Allowed": "/",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
}


async def service_worker(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_ROOT / "sw.js", headers=SERVICE_WORKER_HEADERS)


def setup(app: web.Application, settings: GatewaySettings) -> None:
    app.router.add_get("/", index, name="webapp.index")
    app.router.add_get("/sw.js", service_worker, name="webapp.service_worker")
    app.router.add_get(
        APP_PREFIX + "/{path:.+}", folder_handler(WEB_ROOT, FILE_HEADERS), name="webapp.files"
    )
