"""Domain errors: what a command can fail with, and the HTTP status each one means.

Services raise these from handlers; the bus turns them into error replies; the
gateway turns a reply's error into {error: {code, message, details}} with
`status`. One table, so the same failure has the same answer everywhere.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson


class DomainError(Exception):
    """A failure the caller is told about. `code` is stable, `message` is for humans."""

    status: ClassVar[int] = 400
    default_code: ClassVar[str] = "bad_request"

    def __init__(
        self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.details = details or {}

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "details": self.details,
            "status": self.status,
        }


class Unauthorized(DomainError):
    status = 401
    default_code = "unauthorized"


class Forbidden(DomainError):
    status = 403
    default_code = "forbidden"


class NotFound(DomainError):
    status = 404
    default_code = "not_found"


class RequestTimeout(DomainError):
    status = 408
    default_code = "request_timeout"


class Conflict(DomainError):
    status = 409
    default_code = "conflict"


class PayloadTooLarge(DomainError):
    status = 413
    default_code = "payload_too_large"


class Invalid(DomainError):
    status = 422
    default_code = "invalid"


class RateLimited(DomainError):
    status = 429
    default_code = "rate_limited"


class Unavailable(DomainError):
    status = 503
    default_code = "unavailable"


class ReplyTimeout(DomainError):
    status = 504
    default_code = "timeout"


_BY_STATUS: dict[int, type[DomainError]] = {
    cls.status: cls
    for cls in (
        Unauthorized,
        Forbidden,
        NotFound,
        RequestTimeout,
        Conflict,
        PayloadTooLarge,
        Invalid,
        RateLimited,
        Unavailable,
        ReplyTimeout,
    )
}


def error_from_dict(data: dict[str, Any]) -> DomainError:
    """Rebuild a DomainError from `as_dict()` output (e.g. out of a reply)."""
    cls = _BY_STATUS.get(int(data.get("status", 400)), DomainError)
    return cls(str(data.get("message", "")), code=data.get("code"), details=data.get("details"))


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> bytes:
    """The JSON body of every error answer: {"error": {"code", "message", "details"}}."""
    return orjson.dumps({"error": {"code": code, "message": message, "details": details or {}}})
