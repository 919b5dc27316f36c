"""One request and its response: the ASGI `receive` and `send` the app gets.

The app runs in the connection's own task; `receive` reads the socket itself, so no task is started
per request. Once the body has been read, `receive` waits for the peer to go away (reading ahead into
the connection buffer, so pipelined requests are kept) and is released when the response completes.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

import anyio
import anyio.lowlevel

from ..._core.asgi import JSON_CONTENT_TYPE_LINE, Message, send_json_bytes
from .access_log import log_access
from .body import BodyReader
from .config import ServerConfig
from .errors import ClientDisconnected, HttpRefusal
from .head import RequestHead
from .response import ResponseHead, date_header, encode_response_head, plain_response, status_line


class Connection(Protocol):
    """What a request cycle needs of its connection (`connection.HttpConnection`)."""

    app: Any  # the app the server calls
    buffer: bytearray
    config: ServerConfig
    client: tuple[str, int] | None
    lost: bool
    linger: bool

    def server_stopping(self) -> bool: ...

    def cancel_call(self) -> None: ...

    async def read_more(self) -> bool: ...

    async def write(self, data: bytes, *, direct: bool = False) -> None: ...


__all__ = ["RequestCycle"]


_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_CLOSE: Final = b"connection: close\r\n"
_CHUNKED: Final = b"transfer-encoding: chunked\r\n"
_LAST_CHUNK: Final = b"0\r\n\r\n"
_DISCONNECT: Final[Message] = {"type": "http.disconnect"}
# What `encode_response_head` writes for `send_json_bytes`'s headers, with the length to fill in.
_JSON_LINES: Final = b"%s: %s\r\ncontent-length: %%d\r\n" % JSON_CONTENT_TYPE_LINE


class RequestCycle:
    __slots__ = (
        "body",
        "conn",
        "continue_sent",
        "disconnected",
        "framing",
        "head",
        "in_call",
        "keep_alive",
        "pending_head",
        "reader_exited",
        "reader_scope",
        "remaining",
        "request_complete",
        "response_complete",
        "send_refused",
        "sent_bytes",
        "status",
        "taken_over",
    )

    def __init__(self, conn: Connection, head: RequestHead) -> None:
        self.conn = conn
        self.head = head
        self.body = BodyReader(head.content_length, head.chunked)
        self.keep_alive = head.keep_alive
        self.continue_sent = False
        self.disconnected = False
        self.response_complete = False
        self.request_complete = False  # the last http.request message was received
        self.send_refused = False  # `send` raised `ClientDisconnected`
        self.taken_over = False  # the server answered itself (a broken body): the app's sends are dropped
        self.in_call = False  # the app's call for this request is running (set by the connection)
        self.status = 0  # 0 until the response starts
        self.framing = ""  # "length", "chunked", "close" (HTTP/1.0, unsized) or "none" (HEAD, 1xx, 204, 304)
        self.remaining = 0
        self.pending_head = b""
        self.sent_bytes = 0
        self.reader_scope: anyio.CancelScope | None = None
        self.reader_exited: anyio.Event | None = None

    # -- receive -------------------------------------------------------------------------------

    async def receive(self) -> Message:
        if self.response_complete or self.disconnected:
            return _DISCONNECT
        if not self.request_complete:
            return await self._read_body()
        return await self._wait_for_disconnect()

    async def _read_body(self) -> Message:
        conn = self.conn
        if self.head.expect_continue and not self.continue_sent and not self.response_started:
            self.continue_sent = True
            if not conn.buffer:
                await conn.write(_CONTINUE)
        while True:
            try:
                chunk = self.body.read(conn.buffer)
            except HttpRefusal as refusal:
                await self._refuse_body(refusal)
                return _DISCONNECT
            if self.body.done:
                self.request_complete = True
                return {"type": "http.request", "body": chunk, "more_body": False}
            if chunk:
                return {"type": "http.request", "body": chunk, "more_body": True}
            if not await conn.read_more():
                self.disconnected = True
                return _DISCONNECT

    async def _refuse_body(self, refusal: HttpRefusal) -> None:
        """A broken body: answer it (if the app has not started to) and end the connection."""
        self.disconnected = True
        self.keep_alive = False
        self.conn.linger = True
        if not self.response_started and not self.conn.lost:
            self.taken_over = True
            self.status = refusal.status
            self.pending_head = b""
            await self.conn.write(plain_response(refusal.status, refusal.reason))
            self.log(0)

    async def _wait_for_disconnect(self) -> Message:
        conn = self.conn
        exited = self.reader_exited = anyio.Event()
        try:
            with anyio.CancelScope() as scope:
                self.reader_scope = scope
                while len(conn.buffer) <= conn.config.max_header_bytes:  # pipelined requests wait in the buffer
                    if not await conn.read_more():
                        self.disconnected = True
                        break
                else:
                    await anyio.sleep_forever()  # enough read ahead: leave the rest to TCP's flow control
        finally:
            self.reader_scope = None
            exited.set()
        return _DISCONNECT

    async def release_reader(self) -> None:
        """End a `receive` still reading the socket (a task the app left running), before the
        connection reads again: two readers of one stream are an error."""
        if self.reader_scope is not None and self.reader_exited is not None:
            self.reader_scope.cancel()
            await self.reader_exited.wait()

    # -- send ----------------------------------------------------------------------------------

    @property
    def response_started(self) -> bool:
        """Whether any of the app's response went out (a started one's head waits for its first body)."""
        return self.status != 0 and not self.pending_head

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if self.taken_over:
            return
        if self.conn.lost:
            # Still a cancellation point and a turn for the others: an app may catch this and go on.
            await anyio.lowlevel.checkpoint()
            self._refuse_send()
        if not self.status:
            if kind != "http.response.start":
                raise RuntimeError(f"expected http.response.start, got {kind!r}")
            self._start(message)
        elif kind != "http.response.body":
            raise RuntimeError(f"expected http.response.body, got {kind!r}")
        elif self.response_complete:
            raise RuntimeError("the response is already complete")
        else:
            await self._body(message.get("body", b""), message.get("more_body", False))

    async def send_json(self, status: int, body: bytes) -> None:
        """`DIRECT_JSON_EXTENSION`: a whole JSON answer in one call, written and treated as `send`
        treats its two messages (a start with `application/json` and the body's length, then the
        body): the same bytes, the same errors, the same connection handling after it."""
        if self.status or self.taken_over or self.conn.lost or not 200 <= status <= 999 or status in (204, 304):
            # Anything but a fresh answer with a body on a sound connection: the messages' own path.
            await send_json_bytes(self.send, status, body)
            return
        self.status = status
        if self.head.method == "HEAD":
            self.framing = "none"
        else:
            self.framing = "length"
            self.remaining = len(body)
        if self.conn.server_stopping():
            self.keep_alive = False
        close = b"" if self.keep_alive else _CLOSE
        self.pending_head = status_line(status) + _JSON_LINES % len(body) + close + date_header() + b"\r\n"
        await self._body(body, False)

    def _start(self, message: Message) -> None:
        head: ResponseHead = encode_response_head(message["status"], message.get("headers", ()))
        status = self.status = head.status
        request = self.head
        if head.close or self.conn.server_stopping():
            self.keep_alive = False
        if request.method == "HEAD" or status < 200 or status in (204, 304):
            self.framing = "none"
            extra = b""
        elif head.content_length is not None:
            self.framing = "length"
            self.remaining = head.content_length
            extra = b""
        elif request.http_version == "1.1":
            self.framing = "chunked"
            extra = _CHUNKED
        else:
            self.framing = "close"
            self.keep_alive = False
            extra = b""
        close = b"" if self.keep_alive else _CLOSE
        # The head waits for the first body message, as ASGI asks: then it goes out in the same write
        # (a streamed answer's first event too), and an app that fails before any body still gets
        # its 500. An app that wants a head on the wire at once sends an empty body.
        self.pending_head = status_line(status) + head.lines + extra + close + date_header() + b"\r\n"

    async def _body(self, body: bytes, more: bool) -> None:
        framing = self.framing
        head = data = self.pending_head
        if framing == "chunked":
            if body:
                data += b"%x\r\n" % len(body) + body + b"\r\n"
            if not more:
                data += _LAST_CHUNK
        elif framing == "length":
            if len(body) > self.remaining:
                self.keep_alive = False
                raise RuntimeError("response body longer than its Content-Length")
            self.remaining -= len(body)
            data += body
            if not more and self.remaining:
                self.keep_alive = False  # shorter than announced: the connection cannot be reused
        elif framing == "close":
            data += body
        if framing != "none":
            self.sent_bytes += len(body)
        if data:
            self.pending_head = b""
            # A response's first write and its last are direct; the writes between yield.
            await self.conn.write(data, direct=not more or bool(head))
        if not more:
            self.response_complete = True
            if self.reader_scope is not None:
                self.reader_scope.cancel()
            if self.conn.config.access_log:
                self.log(self.sent_bytes)
        if self.conn.lost:
            self._refuse_send()

    def _refuse_send(self) -> None:
        """A write failed: the peer is gone. (Not at the end of its stream alone: a client may
        half-close once its request is sent, and still read the answer.)"""
        self.send_refused = True
        raise ClientDisconnected("the client went away")

    def log(self, size: int) -> None:
        if self.conn.config.access_log:
            head = self.head
            log_access(self.conn.client, head.method, head.raw_path, head.http_version, self.status, size)

    # -- cancelling the app's call (`REQUEST_CANCEL_EXTENSION`: the cycle is its `CallScopeLender`) --

    @property
    def app(self) -> object:
        return self.conn.app

    def cancel(self) -> None:
        """`REQUEST_CANCEL_EXTENSION`: cancel the app's call, as a cancel scope of its own around the
        call would, at the cost of the connection (see `connection.HttpConnection.cancel_call`), which
        ends once the call returns. Once the call has returned, nothing happens."""
        if self.in_call:
            self.keep_alive = False  # said on the response if its head has not gone yet
            self.conn.cancel_call()

    # -- after the app returned ----------------------------------------------------------------

    def can_continue(self) -> bool:
        """Whether the connection may carry the next request: framing intact and the body consumed."""
        if not (self.keep_alive and self.response_complete) or self.disconnected or self.conn.lost:
            return False
        if self.body.done:
            return True
        if self.head.expect_continue and not self.continue_sent:
            return False  # the client may never send this body
        try:
            self.body.read(self.conn.buffer)  # what already arrived of an unread body is dropped
        except HttpRefusal:
            return False
        return self.body.done
