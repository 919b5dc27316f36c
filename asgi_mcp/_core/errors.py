"""The exception tree: one root, split by who is at fault.

Protocol errors carry the HTTP status and JSON-RPC code they are answered with, so the ASGI shell has
exactly one place that turns an exception into a response. Anything that is not an `AsgiMcpError`
reaching that place is a bug and becomes a generic 500 with no internals in the body.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "AsgiMcpError",
    "ConfigurationError",
    "ProtocolError",
    "SecurityRefusal",
    "StoreUnavailable",
    "SubscriptionCut",
    "TenantConflict",
    "TooManyRequests",
]

# JSON-RPC 2.0 and MCP error codes used by the transport itself.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
REQUEST_CANCELLED = -32800
HEADER_MISMATCH = -32020
UNSUPPORTED_PROTOCOL_VERSION = -32022
# Too many requests (answered with HTTP 429 and `Retry-After`; `error.data.retryAfter` in seconds). The
# code the draft spec reserves for rate limits; the one place it is named, until the spec adopts it.
RATE_LIMITED = -32023
# Transport-level refusal with no JSON-RPC meaning of its own (session limit, shutdown).
SERVER_BUSY = -32000


class AsgiMcpError(Exception):
    """Root of every exception asgi_mcp raises."""


class ConfigurationError(AsgiMcpError, ValueError):
    """The application was configured or used in a way that cannot work (raised at construction or startup)."""


class ProtocolError(AsgiMcpError):
    """A request broke the protocol; answered with `status` and, where the spec asks, a JSON-RPC error body.

    Args:
        status: the HTTP status of the answer.
        message: the client-facing message; never internals.
        code: the JSON-RPC error code, or None for an answer without a JSON-RPC body.
        request_id: the id of the request being refused, when it could be read.
        data: optional JSON-RPC `error.data`.
        headers: extra response headers (`Allow`, `WWW-Authenticate`, ...).
        reason: the operator-facing reason written to the log; defaults to `message`.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: int | None = INVALID_REQUEST,
        request_id: str | int | None = None,
        data: Any = None,
        headers: Sequence[tuple[bytes, bytes]] = (),
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.request_id = request_id
        self.data = data
        self.headers = tuple(headers)
        self.reason = reason or message

    def error_body(self) -> Mapping[str, Any] | None:
        """The JSON-RPC error object sent as the response body, or None for an empty body."""
        if self.code is None:
            return None
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return {"jsonrpc": "2.0", "id": self.request_id, "error": error}


class SecurityRefusal(ProtocolError):
    """A request refused by DNS-rebinding protection (bad Host or Origin); logged at WARNING."""


class StoreUnavailable(ProtocolError):
    """Shared state (Redis) did not answer in time: 503 with `Retry-After`, never a hang or a 500.

    Args:
        what: which store, for the operator's log (never a key, token or URL with credentials).
        retry_after: seconds the client is told to wait.
    """

    def __init__(self, what: str, *, retry_after: int = 1) -> None:
        super().__init__(
            503,
            "Service temporarily unavailable",
            code=SERVER_BUSY,
            headers=[(b"retry-after", str(retry_after).encode())],
            reason=f"{what} unavailable",
        )


class TenantConflict(AsgiMcpError, ValueError):
    """A tenant store refused a write: the token, or the tenant id, is already registered."""


class SubscriptionCut(AsgiMcpError):
    """A subscriber (to a message bus channel or a tenant store's changes) fell more than its buffer behind
    and was cut: what it missed is gone. It subscribes again (a tenant mirror resynchronises first)."""


class TooManyRequests(ProtocolError):
    """Over a rate limit or a per-tenant session cap: 429, `Retry-After`, and `error.data.retryAfter`.

    Args:
        retry_after: whole seconds the client should wait (at least 1).
        limit: which limit refused it (`tools/call`, `requests`, `sessions`, ...), for logs and audit.
    """

    def __init__(self, retry_after: int, *, limit: str, request_id: str | int | None = None) -> None:
        super().__init__(
            429,
            "Too many requests",
            code=RATE_LIMITED,
            request_id=request_id,
            data={"retryAfter": retry_after},
            headers=[(b"retry-after", str(retry_after).encode())],
            reason=f"over the {limit} limit; retry after {retry_after}s",
        )
        self.retry_after = retry_after
        self.limit = limit
