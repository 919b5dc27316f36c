"""The app's error boundary: the `send` that knows how far the response got, and refusals.

`Responder` wraps ASGI `send` for one request; `log_refusal` logs a refused request (who, where
known, never the token) and makes its audit record; `answer_internal_error` is the app's one
catch-all; `error_body` is the JSON-RPC error of an answer no request id can be given to.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any, Final

from .._core.asgi import ClientGone, HttpRequest, Send, send_json
from .._core.errors import INTERNAL_ERROR, ProtocolError, SecurityRefusal
from .._core.http import is_visible_ascii
from .._ops.lifecycle import EventHub, TransportError
from .._ops.telemetry import current_tenant
from .operations import Operations

__all__ = ["NOT_RUNNING_MESSAGE", "Responder", "answer_internal_error", "error_body", "log_refusal"]

NOT_RUNNING_MESSAGE: Final = (
    "asgi_mcp.McpApp is not running. Serve it as the top-level ASGI app (the server runs its lifespan), "
    "or, when it is mounted inside another framework, enter `async with mcp_app.lifespan_context():` "
    "in the host application's lifespan."
)

http_logger = logging.getLogger("asgi_mcp.http")
_app_logger: Final = logging.getLogger("asgi_mcp")


class Responder:
    """Wraps ASGI `send`: remembers whether the response started and finished, and turns a send on
    a closed connection (`OSError`, ASGI 2.4) into `ClientGone`.

    `direct`: the server's whole-answer call for a JSON answer (`_core.asgi.direct_json_sender`),
    which `send_json_bytes` takes as `direct_json` when it is there."""

    __slots__ = ("_direct", "_send", "finished", "started", "status")

    def __init__(self, send: Send, direct: Callable[[int, bytes], Awaitable[None]] | None = None) -> None:
        self._send = send
        self._direct = direct
        self.started = False
        self.finished = False
        self.status = 0

    @property
    def direct_json(self) -> Callable[[int, bytes], Awaitable[None]] | None:
        # Made when read, not kept: a bound method of its own in a slot would be a reference cycle,
        # left to the cycle collector instead of freed with the request.
        return self._send_json if self._direct is not None else None

    async def _send_json(self, status: int, body: bytes) -> None:
        assert self._direct is not None
        self.started = self.finished = True
        self.status = status
        try:
            await self._direct(status, body)
        except OSError:
            raise ClientGone from None

    async def __call__(self, message: Any) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            self.status = message["status"]
        elif not message.get("more_body", False):
            self.finished = True
        try:
            await self._send(message)
        except OSError:
            raise ClientGone from None


async def answer_internal_error(request: HttpRequest, responder: Responder, events: EventHub) -> None:
    """A bug, never the client's fault: logged, a `transport_error` event, and a 500 if nothing was
    sent yet (none to a client that left meanwhile). Nothing internal leaves."""
    _app_logger.exception("unexpected error serving %s %s", request.method, request.path)
    if events.has_listeners("transport_error"):
        events.emit(TransportError(tenant_id=None, session_id=None, error="internal_error"))
    if not responder.started:
        with suppress(ClientGone):
            await send_json(responder, 500, error_body(INTERNAL_ERROR, "Internal server error"))


def error_body(code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}


def log_refusal(request: HttpRequest, error: ProtocolError, operations: Operations | None) -> None:
    level = logging.WARNING if isinstance(error, SecurityRefusal) else logging.INFO
    extra: dict[str, Any] = {"status": error.status, "reason": error.reason, "method": request.method}
    # Who, where known: the tenant once authenticated (never the token), the session the request named.
    tenant_id = current_tenant.get()
    if tenant_id is not None:
        extra["tenant_id"] = tenant_id
    session_id = request.headers.get("mcp-session-id")
    if session_id is not None and is_visible_ascii(session_id):
        extra["session_id"] = session_id
    else:
        session_id = None
    if operations is not None:
        operations.refused(tenant_id, session_id, error)  # the audit record
    http_logger.log(
        level, "refused %s %s: %s (%d)", request.method, request.path, error.reason, error.status, extra=extra
    )
