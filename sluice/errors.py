"""The error tree: every failure a client can see, with its HTTP status and OpenAI type/code.

    SluiceError                       500 server_error
    ├── InvalidRequest                400 invalid_request_error   (malformed JSON, wrong types, bad params)
    │   └── BodyTooLarge              413 invalid_request_error / request_too_large
    ├── AuthenticationFailed          401 invalid_request_error / invalid_api_key
    ├── PermissionDenied              403 invalid_request_error / model_not_allowed
    ├── NotFound                      404 invalid_request_error / not_found
    │   └── ModelNotFound             404 invalid_request_error / model_not_found
    ├── Conflict                      409 invalid_request_error / conflict  (well-formed, but not now)
    ├── RateLimited                   429 requests / rate_limit_exceeded          (retryable)
    │   └── QuotaExceeded             429 insufficient_quota / insufficient_quota (x-should-retry: false)
    ├── ServerShutdown                503 server_error / server_shutdown          (retryable; the grace ran out)
    └── UpstreamError                 502 server_error / upstream_error           (retryable)
        ├── UpstreamUnavailable       503 server_error / upstream_unavailable     (retryable)
        ├── UpstreamTimeout           504 server_error / upstream_timeout         (retryable)
        ├── UpstreamRateLimited       429 rate_limit_exceeded                     (retryable, retry-after)
        ├── UpstreamAuthFailed        502 server_error / upstream_auth_failed     (another target only)
        └── UpstreamRejected          4xx relayed from the upstream (not retryable)

`to_body()` gives the OpenAI envelope `{"error": {"message", "type", "param", "code"}}`; `headers()`
gives `retry-after` / `x-should-retry` where they carry meaning.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

import orjson

from sluice.redact import mask

log = logging.getLogger("sluice")


class SluiceError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str | None = "internal_error"
    retry_after: float | None
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        type: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def to_body(self) -> bytes:
        return orjson.dumps(self.to_dict())

    def headers(self) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        if self.retry_after is not None and self.retry_after > 0:
            out.append((b"retry-after", str(max(1, math.ceil(self.retry_after))).encode()))
            out.append((b"retry-after-ms", str(int(self.retry_after * 1000)).encode()))
        return out


class InvalidRequest(SluiceError):
    status = 400
    type = "invalid_request_error"
    code: str | None = None


def invalid_field(validation_error: str) -> InvalidRequest:
    """A 400 naming the field from a msgspec validation message ("Expected `int` <= 128 - at `$.n`")."""
    what, sep, where = validation_error.partition(" - at `$")
    # msgspec writes a dict's value as `[...]`: the field that holds the dict is the one to name
    param = where.rstrip("`").lstrip(".").replace("[...]", "") or None if sep else None
    code = "invalid_type" if ", got `" in what else "invalid_value"
    missing = re.match(r"Object missing required field `([^`]+)`", what)
    if missing:
        param = f"{param}.{missing[1]}" if param else missing[1]
        code = "missing_required_parameter"
    unknown = re.match(r"Object contains unknown field `([^`]+)`", what)
    if unknown:
        param = f"{param}.{unknown[1]}" if param else unknown[1]
        code = "unknown_parameter"
    return InvalidRequest(f"Invalid '{param or 'body'}': {what[:1].lower()}{what[1:]}.", param=param, code=code)


class MethodNotAllowed(InvalidRequest):
    status = 405
    code = "method_not_allowed"

    def __init__(self, message: str, allow: tuple[str, ...]) -> None:
        super().__init__(message)
        self.allow = allow

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"allow", ", ".join(self.allow).encode())]


class BodyTooLarge(InvalidRequest):
    status = 413
    code = "request_too_large"


class AuthenticationFailed(SluiceError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDenied(SluiceError):
    status = 403
    type = "invalid_request_error"
    code = "model_not_allowed"


class NotFound(SluiceError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class Conflict(SluiceError):
    """A request the schema allows that the current state refuses (a balance at its cap, a date passed)."""

    status = 409
    type = "invalid_request_error"
    code = "conflict"


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(f"The model `{model}` does not exist or you do not have access to it.", param="model")


class RateLimited(SluiceError):
    status = 429
    type = "requests"
    code = "rate_limit_exceeded"
    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, type: str | None = None,
                 extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message, retry_after=retry_after, type=type)
        self.extra_headers = extra_headers or []

    def headers(self) -> list[tuple[bytes, bytes]]:
        return super().headers() + self.extra_headers


class QuotaExceeded(RateLimited):
    type = "insufficient_quota"
    code = "insufficient_quota"
    retryable = False

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [*super().headers(), (b"x-should-retry", b"false")]


class ServerShutdown(SluiceError):
    """This process is stopping and its shutdown grace ran out before the request ended."""

    status = 503
    code = "server_shutdown"
    retryable = True

    def __init__(self, message: str = "The server is shutting down and ended this request before it "
                                      "finished. Retry it; another instance will serve it.") -> None:
        super().__init__(message)


class UpstreamError(SluiceError):
    """The upstream failed. Retryable ones may be retried on another target before the first byte."""

    status = 502
    type = "server_error"
    code: str | None = "upstream_error"
    retryable = True
    retry_same_target = True  # False: retry on another target only (the same one would say the same)


class UpstreamUnavailable(UpstreamError):
    status = 503
    code = "upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class UpstreamRateLimited(UpstreamError):
    status = 429
    type = "requests"
    code = "rate_limit_exceeded"


class UpstreamAuthFailed(UpstreamError):
    """The upstream refused the gateway's own credentials (401/403): the operator's problem, not the
    client's; the client is told no more than that, the detail goes to the server log."""

    code = "upstream_auth_failed"
    retry_same_target = False

    def __init__(self, upstream_status: int = 401, detail: str = "") -> None:
        super().__init__("The upstream provider rejected the gateway's credentials; the operator has been "
                         "notified.")
        self.upstream_status = upstream_status  # for the operator (a key pool's disable reason), never the client
        self.detail = detail                    # the upstream's own words, credentials masked


class UpstreamRejected(UpstreamError):
    """A 4xx from the upstream other than 429: the request itself is at fault; relayed, not retried."""

    status = 400
    type = "invalid_request_error"
    code = None
    retryable = False


def error_for_upstream_status(status: int, message: str, *, type: str | None = None, code: str | None = None,
                              param: str | None = None, retry_after: float | None = None) -> UpstreamError:
    """Map an upstream HTTP status to the error the client sees (a 529 overload becomes 503).

    This is the boundary every provider's error passes: credentials in the upstream's text are masked
    here, and a refusal of the gateway's own key is logged (masked) and worded for the customer."""
    message = mask(message)
    if status in (401, 403):
        log.error("the upstream refused the gateway's credentials (HTTP %d): %s", status, message[:500])
        return UpstreamAuthFailed(status, message[:500])
    if status == 429:
        return UpstreamRateLimited(message, type=type or "requests", code=code or "rate_limit_exceeded",
                                   param=param, retry_after=retry_after)
    if status == 408:
        return UpstreamTimeout(message, param=param, retry_after=retry_after)
    if 400 <= status < 500:
        err: UpstreamError = UpstreamRejected(message, status=status, type=type or "invalid_request_error",
                                              code=code, param=param)
        if status == 409:
            err.retryable = True
        return err
    if status in (503, 529):
        return UpstreamUnavailable(message, code=code or "upstream_unavailable", retry_after=retry_after)
    if status == 504:
        return UpstreamTimeout(message, retry_after=retry_after)
    return UpstreamError(message, code=code or "upstream_error", retry_after=retry_after)
