"""Why a request is refused before the app sees it: an HTTP status and a short reason (never echoed input)."""

from __future__ import annotations

from ..._core.errors import AsgiMcpError

__all__ = ["HttpRefusal"]


class HttpRefusal(AsgiMcpError):
    """The server answers `status` itself and closes the connection."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
