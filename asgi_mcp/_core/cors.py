"""CORS for browser-based MCP clients (web inspectors, agents in a page). Pure header logic.

A browser sends `Authorization`, `Mcp-Session-Id`, `MCP-Protocol-Version`, `Mcp-Method`,
`Mcp-Name`, `Mcp-Param-*` and `Last-Event-ID`, none of which is CORS-safelisted, so every request
is preflighted; and it can read `Mcp-Session-Id` and `WWW-Authenticate` only when they are exposed.
Error answers (401, 403, 404) carry the CORS headers too, or the page could not read why it failed.
Allowed origins here are also accepted by the DNS-rebinding check (`_core.origin.OriginPolicy`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from .asgi import Message, Send

__all__: list[str] = []

ALLOWED_HEADERS: Final = frozenset(
    {
        "content-type",
        "authorization",
        "accept",
        "mcp-protocol-version",
        "mcp-session-id",
        "mcp-method",
        "mcp-name",
        "last-event-id",
    }
)
PARAM_PREFIX: Final = "mcp-param-"
EXPOSED: Final = b"Mcp-Session-Id, WWW-Authenticate, MCP-Protocol-Version"
METHODS: Final = b"GET, POST, DELETE, OPTIONS"


class CorsPolicy:
    """Which origins may call the endpoint from a browser, and the headers that say so.

    Args:
        origins: exact origins (`"https://app.example.com"`), or `"*"` for any origin. With `"*"`
            the answer still names the caller's origin rather than `*`, because `*` never covers
            the `Authorization` header.
        max_age: seconds a browser may cache a preflight answer.
    """

    def __init__(self, origins: Sequence[str], *, max_age: int = 600) -> None:
        self.any_origin = "*" in origins
        self.origins = frozenset(origin.rstrip("/").lower() for origin in origins if origin != "*")
        self.max_age = max_age

    def allows(self, origin: str) -> bool:
        return self.any_origin or origin.rstrip("/").lower() in self.origins

    def preflight_headers(self, origin: str, requested: str | None) -> list[tuple[bytes, bytes]] | None:
        """Headers of a preflight answer, or None when a requested header is not allowed."""
        names = [name.strip().lower() for name in (requested or "").split(",") if name.strip()]
        if any(name not in ALLOWED_HEADERS and not name.startswith(PARAM_PREFIX) for name in names):
            return None
        allow_headers = ", ".join(sorted(ALLOWED_HEADERS | set(names)))
        return [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-methods", METHODS),
            (b"access-control-allow-headers", allow_headers.encode("latin-1")),
            (b"access-control-max-age", str(self.max_age).encode()),
            (b"vary", b"Origin"),
        ]

    def wrap(self, send: Send, origin: str) -> Send:
        """A `send` that adds the CORS headers to the response start, whatever the status."""
        extra = [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-expose-headers", EXPOSED),
            (b"vary", b"Origin"),
        ]

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        return send_with_cors
