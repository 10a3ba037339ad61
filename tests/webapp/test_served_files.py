"""The gateway serves the web client's files and the API explorer's, with their headers."""

from __future__ import annotations

import aiohttp

from tests.realtime.test_socket_edges import handshake_status
from tests.realtime.wsclient import connect
from tests.support.client import Api


async def test_the_client_page_and_its_modules_are_served(
    http: aiohttp.ClientSession, gateway_url: str
) -> None:
    api = Api(http, gateway_url)
    page = await api.call("GET", "/")
    assert page.status == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert page.headers["Cache-Control"] == "no-cache"
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp
    assert "connect-src 'self'" in csp
    assert '<script type="module" src="/app/js/app.js">' in page.body
    for path in ("/app/js/app.js", "/app/js/store.js", "/app/js/socket.js", "/app/app.css"):
        asset = await api.call("GET", path)
        assert asset.status == 200, path
        assert asset.headers["Cache-Control"] == "no-cache"
    module = await api.call("GET", "/app/js/app.js")
    assert module.headers["Content-Type"].startswith(("application/javascript", "text/javascript"))


async def test_the_service_worker_is_served_at_the_root_for_the_whole_app(
    http: aiohttp.ClientSession, gateway_url: str
) -> None:
    """A service worker's scope can be no wider than its script's folder unless the
    response allows it: /sw.js covers "/", and says so; browsers run it only when it is
    served as JavaScript."""
    api = Api(http, gateway_url)
    worker = await api.call("GET", "/sw.js")
    assert worker.status == 200
    assert worker.headers["Content-Type"].startswith("text/javascript")
    assert worker.headers["Service-Worker-Allowed"] == "/"
    assert worker.headers["Cache-Control"] == "no-cache"
    assert worker.headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'self'" in worker.headers["Content-Security-Policy"]
    for handler in ('addEventListener("push"', 'addEventListener("notificationclick"'):
        assert handler in worker.body, handler
    module = await api.call("GET", "/app/js/notifications.js")
    assert module.status == 200
    assert '"/sw.js"' in module.body


async def test_a_missing_file_is_a_404_in_the_error_shape(
    http: aiohttp.ClientSession, gateway_url: str
) -> None:
    api = Api(http, gateway_url)
    for path in ("/app/js/missing.js", "/app/../gateway/app.py", "/assets/swagger-ui/nope.js"):
        reply = await api.call("GET", path)
        assert reply.status == 404, path
        assert reply.error_code() is not None, (path, reply.body)


async def test_the_socket_accepts_the_gateways_own_origin_only(
    http: aiohttp.ClientSession, gateway_url: str
) -> None:
    """The page served here may open the socket; a page of another origin may not,
    even one that names this gateway's host under another port or scheme."""
    api = Api(http, gateway_url)
    user = await api.new_user("origin")
    own = await connect(http, gateway_url, user.token, headers={"Origin": gateway_url})
    await own.close()
    host = gateway_url.split("://", 1)[1]
    for origin in (f"https://{host}", "http://127.0.0.1:1", "https://evil.example"):
        assert (
            await handshake_status(http, gateway_url, headers={**user.auth, "Origin": origin})
            == 403
        ), origin
