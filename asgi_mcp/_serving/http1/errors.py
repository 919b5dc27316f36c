"""What the built-in server raises: a refused request (an HTTP status and a short reason, never echoed
input), and `send` once the peer is gone."""

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
    """`send` once a write to the peer failed: the `OSError` that ASGI 2.4 asks for, so an app
    streaming to nobody learns it (Starlette, told 2.4, no longer listens for `http.disconnect`)."""
