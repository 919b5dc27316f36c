"""The app's view of one response: whether it started, its status, and a client gone as `ClientGone`."""

from __future__ import annotations

from typing import Any

from .._core.asgi import ClientGone, Send

__all__ = ["Responder", "error_body"]


class Responder:
    """Wraps ASGI `send`: remembers whether the response started, and turns a send on a closed
    connection (`OSError`, ASGI 2.4) into `ClientGone`."""

    __slots__ = ("_send", "started", "status")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False
        self.status = 0

    async def __call__(self, message: Any) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            self.status = message["status"]
        try:
            await self._send(message)
        except OSError:
            raise ClientGone from None


def error_body(code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}
