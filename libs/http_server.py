"""The HTTP server every service runs: connection timeouts, and errors raised before routing.

Owns the protocol-level settings of aiohttp's server and the answers it gives
before a request reaches the application:

- A request's line and headers must arrive within `header_timeout_s` of the
  connection opening (or of the previous response on a kept-alive connection);
  a client that trickles them (slowloris) is disconnected. aiohttp's
  keep-alive timer is exactly that deadline: it is armed when the connection
  opens and after each response, fires only while the handler still waits for
  a complete request, and is not pushed back by partial data. So the idle
  timeout of kept-alive connections is the same number.
- The request line may be up to 72 KiB (a sync cursor of a member of many
  groups is long, and the API's query parameters are bounded to fit), each
  header line up to 8 KiB. A request the parser rejects (a line over those
  limits, a malformed line) is answered in the error shape of libs/errors.py
  (`{"error": {"code", "message", "details"}}`), not aiohttp's plain text.

aiohttp has no public hook for the parser's error answer, so the runner swaps
the class of the server it builds for a subclass whose request handlers
override `handle_error` (aiohttp's documented way to customise it is
subclassing RequestHandler). The swap adds no state.
"""

from __future__ import annotations

from http import HTTPStatus

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from libs.errors import error_body

#: Longest request line (method, URL, version) and longest header line.
MAX_REQUEST_LINE_BYTES = 72 * 1024
MAX_HEADER_LINE_BYTES = 8190


class _ShapedRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering its own errors in the error shape."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # Keep aiohttp's bookkeeping (logging, the check that nothing was sent yet).
        super().handle_error(request, status, exc, message)
        if isinstance(exc, LineTooLong):
            code, text = (
                "line_too_long",
                "the request line (72 KiB) or a header (8 KiB) is too long",
            )
        elif status == HTTPStatus.INTERNAL_SERVER_ERROR:
            code, text = "internal", "internal error"
        else:
            code, text = "bad_request", "the request is not valid HTTP"
        response = web.Response(
            body=error_body(code, text), status=status, content_type="application/json"
        )
        response.force_close()
        return response


class _ShapedServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _ShapedRequestHandler(self, loop=self._loop, **self._kwargs)


class ServiceRunner(web.AppRunner):
    """An AppRunner whose connections have a header deadline and shaped protocol errors."""

    def __init__(self, app: web.Application, *, header_timeout_s: float, **kwargs: object) -> None:
        super().__init__(
            app,
            keepalive_timeout=header_timeout_s,
            max_line_size=MAX_REQUEST_LINE_BYTES,
            max_field_size=MAX_HEADER_LINE_BYTES,
            **kwargs,  # type: ignore[arg-type]
        )

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _ShapedServer
        return server
