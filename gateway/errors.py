"""The error middleware: every failure leaves as {error: {code, message, details}}.

DomainErrors keep their status; aiohttp's own HTTP errors (404, 405, 413) are
re-shaped; a dependency that is down is 503; anything unexpected is logged with
its traceback and answered 500 without one. No traceback ever reaches a client.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiokafka.errors import KafkaError
from pymongo.errors import PyMongoError
from redis.exceptions import RedisError

from libs.errors import DomainError, RateLimited, RequestTimeout, error_body
from libs.logging import get_logger

log = get_logger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return web.Response(
        body=error_body(code, message, details),
        status=status,
        content_type="application/json",
        headers=headers,
    )


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except DomainError as exc:
        headers = None
        if isinstance(exc, RateLimited) and "retry_after_s" in exc.details:
            headers = {"Retry-After": str(max(1, int(exc.details["retry_after_s"] + 0.999)))}
        response = error_response(exc.status, exc.code, exc.message, exc.details, headers)
        if isinstance(exc, RequestTimeout):
            response.force_close()  # the rest of the body may still be on its way
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        message = exc.reason if exc.status != 413 else "the request body is too large"
        # A 405 says which methods the resource has (RFC 9110 15.5.6).
        allow = exc.headers.get("Allow")
        return error_response(
            exc.status, code, message, headers={"Allow": allow} if allow else None
        )
    except (RedisError, KafkaError, PyMongoError, ConnectionError) as exc:
        log.warning(
            "dependency unavailable", path=request.path, error=f"{type(exc).__name__}: {exc}"
        )
        return error_response(503, "unavailable", "a dependency is unavailable; retry shortly")
    except Exception:
        log.exception("unhandled error", path=request.path, method=request.method)
        return error_response(500, "internal", "internal error")
