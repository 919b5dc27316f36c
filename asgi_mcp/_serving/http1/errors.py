"""What the built-in server raises: a refused request (an HTTP status and a short reason, never echoed
input), and `send` after the peer went away."""

from __future__ import annotations

from ..._core.errors import AsgiMcpError

__all__ = ["ClientDisconnected", "HttpRefusal"]


class HttpRefusal(AsgiMcpError):
    """The server answers `status` itself and closes the connection."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class ClientDisconnected(AsgiMcpError, OSError):
    """`send` after the peer went away: the `OSError` that ASGI 2.4 asks for, so an app streaming to
    nobody learns it (Starlette, told 2.4, listens for `http.disconnect` no longer and counts on it)."""
