"""ASGI plumbing shared by both eras: typed aliases, the request view handlers see, body reading, answers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from .errors import ProtocolError
from .http import Headers, text
from .jsonrpc import dumps_bytes

__all__ = ["HttpRequest"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_CONTENT_TYPE_LINE: Final = (b"content-type", b"application/json")

# The scope extension of a server that bounds every send, shielded or not (the built-in server: its
# write timeout, as `{"seconds": 30.0}`). A stalled send then fails on its own, so the app leaves it
# to the server instead of opening a cancel scope per send to abandon it (`_io.response`).
SEND_TIMEOUT_EXTENSION: Final = "asgi_mcp.send_timeout"
# The scope extension of a server whose app's call for a request runs inside a cancel scope of the
# server's that nothing but the app and the server's hard stop cancels (the built-in server: the
# connection's). Its value is a `CallScopeLender`: `cancel()` cancels that scope, and the call sees
# cancellation at its next checkpoint, as inside a scope of its own, and stays cancelled until it
# returns (what it still sends, it sends shielded); the connection ends after it. A call once the
# app's call has returned does nothing. The app then needs no cancel scope of its own per request
# (`_io.call_scope`), provided nothing between the server and it enters one: see `request_canceller`.
REQUEST_CANCEL_EXTENSION: Final = "asgi_mcp.request_cancel"
# The scope extension of a server that takes a whole JSON answer in one call (the built-in server).
# Its value is a `DirectJsonServer`: `send_json(status, body)` writes and behaves as `send_json_bytes`'s
# two messages would (a start with `application/json` and the body's length, then the body), with no
# messages to build and read on either side. Taken only by the app the server calls itself
# (`direct_json_sender`): a wrapper between the two would not see the answer.
DIRECT_JSON_EXTENSION: Final = "asgi_mcp.direct_json"
# Set on an ASGI wrapper to the app it calls, by a wrapper that enters no cancel scope around it and
# passes `send` on as it is (as the one-call server's shell): the app behind it may use a lent scope
# and answer directly as if served directly.
INNER_APP_ATTRIBUTE: Final = "asgi_mcp_inner_app"


class CallScopeLender(Protocol):
    """`REQUEST_CANCEL_EXTENSION`'s value."""

    @property
    def app(self) -> object:
        """The app the server calls."""
        ...

    def cancel(self) -> None: ...


class DirectJsonServer(Protocol):
    """`DIRECT_JSON_EXTENSION`'s value."""

    @property
    def app(self) -> object:
        """The app the server calls."""
        ...

    async def send_json(self, status: int, body: bytes) -> None: ...


@dataclass(frozen=True, slots=True, eq=False, init=False)
class HttpRequest:
    """The HTTP request an MCP message arrived on, as handlers see it.

    The SDK hands this object to handlers as `ctx.request` (and `MCPServer`'s `Context.headers`
    reads its `headers`), so tools can read request headers on both eras.
    """

    method: str
    path: str
    headers: Headers
    scope: Scope = field(repr=False)

    def __init__(self, method: str, path: str, headers: Headers, scope: Scope) -> None:
        # Frozen, so assigning to a field raises; the fields are set through their slots instead of
        # the `object.__setattr__` calls a frozen dataclass's own `__init__` makes (one request, one
        # of these: that was two thirds of its cost).
        _set_method(self, method)
        _set_path(self, path)
        _set_headers(self, headers)
        _set_scope(self, scope)

    @property
    def client(self) -> tuple[str, int] | None:
        client = self.scope.get("client")
        return (client[0], client[1]) if client else None


_set_method: Final[Callable[[HttpRequest, str], None]] = vars(HttpRequest)["method"].__set__
_set_path: Final[Callable[[HttpRequest, str], None]] = vars(HttpRequest)["path"].__set__
_set_headers: Final[Callable[[HttpRequest, Headers], None]] = vars(HttpRequest)["headers"].__set__
_set_scope: Final[Callable[[HttpRequest, Scope], None]] = vars(HttpRequest)["scope"].__set__


def sends_bounded(scope: Scope) -> bool:
    """Whether the server fails every stalled send itself (`SEND_TIMEOUT_EXTENSION`)."""
    extensions = scope.get("extensions")
    return extensions is not None and SEND_TIMEOUT_EXTENSION in extensions


def request_canceller(scope: Scope, app: object) -> Callable[[], None] | None:
    """The server's canceller of the app's call (`REQUEST_CANCEL_EXTENSION`), if it offers one and
    serves `app` itself or through a wrapper that says it enters no scope (`INNER_APP_ATTRIBUTE`).
    Behind any other wrapper (a framework, a middleware), a scope of the wrapper's may sit between
    the server's and the request: cancelled, it would reach a request that has no scope of its own."""
    lender: CallScopeLender | None = _offered_to(app, scope, REQUEST_CANCEL_EXTENSION)
    return lender.cancel if lender is not None else None


def direct_json_sender(scope: Scope, app: object) -> Callable[[int, bytes], Awaitable[None]] | None:
    """The server's whole-answer call (`DIRECT_JSON_EXTENSION`), on the same terms as
    `request_canceller`: behind any other wrapper, the answer would pass the wrapper by."""
    server: DirectJsonServer | None = _offered_to(app, scope, DIRECT_JSON_EXTENSION)
    return server.send_json if server is not None else None


def _offered_to(app: object, scope: Scope, extension: str) -> Any:
    """The server's `extension`, if it calls `app` itself or through an `INNER_APP_ATTRIBUTE` wrapper."""
    extensions = scope.get("extensions")
    offer = extensions.get(extension) if extensions is not None else None
    if offer is None or app is None:
        return None
    served = offer.app
    return offer if served is app or getattr(served, INNER_APP_ATTRIBUTE, None) is app else None


class BodyTooLarge(ProtocolError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Request body exceeds {limit} bytes", reason=f"request body over the {limit}-byte limit")


async def read_body(receive: Receive, limit: int, content_length: bytes | None) -> bytes:
    """The whole request body, refusing with 413 as soon as more than `limit` bytes arrive.

    A declared Content-Length over the limit is refused before reading; chunked bodies are counted
    as they arrive, so neither shape can bypass the limit. A client that disconnects mid-body raises
    `ClientGone`.
    """
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            declared = _declared_length(content_length)
        if declared > limit:
            raise BodyTooLarge(limit)
    first = await receive()
    if first["type"] == "http.disconnect":
        raise ClientGone
    body: bytes = first.get("body", b"")
    if not first.get("more_body", False):
        if len(body) > limit:
            raise BodyTooLarge(limit)
        return body
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _declared_length(content_length: bytes) -> int:
    """A Content-Length line `int()` refused as bytes, read as its text (`Headers`: latin-1, trimmed):
    the same integers the header's text gives (`int` of text also skips Unicode spaces)."""
    try:
        return int(text(content_length))
    except ValueError:
        raise ProtocolError(400, "Invalid Content-Length header", code=None) from None


class ClientGone(Exception):
    """The client went away before its request could be answered; nothing is left to send."""


async def send_json(send: Send, status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send_json_bytes(send, status, dumps_bytes(payload), headers)


async def send_json_bytes(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """A JSON response of `body`, encoded already: in one call when `send` carries the server's
    whole-answer call as `direct_json` (`_app.boundary.Responder`, `DIRECT_JSON_EXTENSION`)."""
    if not headers:
        direct: Callable[[int, bytes], Awaitable[None]] | None = getattr(send, "direct_json", None)
        if direct is not None:
            await direct(status, body)
            return
    response_headers = [JSON_CONTENT_TYPE_LINE, (b"content-length", b"%d" % len(body))]
    if headers:
        response_headers.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_empty(send: Send, status: int, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    response_headers = [(b"content-length", b"0")]
    if headers:
        response_headers.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def send_error(send: Send, error: ProtocolError, extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = list(error.headers)
    if extra_headers:
        headers.extend(extra_headers)
    body = error.error_body()
    if body is None:
        await send_empty(send, error.status, headers)
    else:
        await send_json(send, error.status, body, headers)
