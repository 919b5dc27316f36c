"""Raw HTTP/1.1 over a real socket, for the adversarial tests: hand-written request bytes (anything
goes, malformed included) and responses parsed by h11, which also checks that what the server sent
back is valid HTTP (a header value carrying CR/LF, say, fails to parse).

`Spy` wraps the app under test and records what the *app* did (requests it saw, responses it
started, requests in flight), so a test can tell the ASGI server's own refusals from the app's.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
import anyio.abc
import h11

HeaderItems = Sequence[tuple[str | bytes, str | bytes]]

# Visible ASCII, space and tab: all a response header value should ever hold.
_CLEAN_HEADER: Final = re.compile(rb"[\t\x20-\x7e]*")
_CLEAN_NAME: Final = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def as_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


def http_request(
    method: str | bytes,
    headers: HeaderItems,
    body: bytes = b"",
    *,
    target: bytes = b"/mcp",
    version: bytes = b"HTTP/1.1",
) -> bytes:
    """Request bytes exactly as given: no validation, no added headers."""
    lines = [as_bytes(method) + b" " + target + b" " + version]
    lines += [as_bytes(name) + b": " + as_bytes(value) for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@dataclass
class Reply:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        key = name.lower().encode()
        for header_name, value in self.headers:
            if header_name == key:
                return value.decode("latin-1")
        return None

    @property
    def content_type(self) -> str:
        return (self.header("content-type") or "").partition(";")[0].strip()

    def json(self) -> Any:
        return json.loads(self.body)

    def messages(self) -> list[dict[str, Any]]:
        """JSON-RPC messages of an SSE body (data lines; priming events have none)."""
        text = self.body.decode()
        return [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:") and line[5:].strip()]

    def answer(self) -> dict[str, Any]:
        """The JSON-RPC answer, whether JSON or the last message of an SSE stream."""
        if self.content_type == "application/json":
            return dict(self.json())
        assert self.content_type == "text/event-stream", (self.status, self.headers, self.body)
        messages = self.messages()
        assert messages, self.body
        return messages[-1]

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.headers!r}, {self.body[:300]!r})"


class Conn:
    """One client connection. Responses are parsed with h11 (client role); the request side is raw."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=1 << 20)
        self._closed = False
        self._eof = False

    def expect(self, method: str) -> None:
        """Tell the parser which request the next response answers (HEAD has no body)."""
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
        self._h11.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
        self._h11.send(h11.EndOfMessage())

    async def send(self, data: bytes) -> None:
        await self.stream.send(data)

    async def send_eof(self) -> None:
        assert isinstance(self.stream, anyio.abc.SocketStream)
        await self.stream.send_eof()

    async def _next(self) -> Any:
        while True:
            event = self._h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await self._receive()
            self._h11.receive_data(data)

    async def _receive(self) -> bytes:
        try:
            data = await self.stream.receive(65536)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, ConnectionError):
            data = b""
        self._eof = self._eof or not data
        return data

    async def head(self) -> Reply | None:
        """The next response's status and headers; None when the server closed without one."""
        while True:
            try:
                event = await self._next()
            except h11.RemoteProtocolError:
                if self._eof:
                    return None  # closed before a (complete) response head
                raise
            if isinstance(event, h11.Response):
                return Reply(event.status_code, list(event.headers))
            if isinstance(event, h11.ConnectionClosed):
                return None
            assert isinstance(event, h11.InformationalResponse), event

    async def rest(self, reply: Reply) -> Reply:
        chunks: list[bytes] = []
        while True:
            event = await self._next()
            if isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
        reply.body = b"".join(chunks)
        return reply

    async def chunk(self) -> bytes:
        """The next body bytes of a streamed response (b"" once it ended)."""
        event = await self._next()
        if isinstance(event, h11.Data):
            return bytes(event.data)
        return b""

    async def wait_closed(self) -> None:
        """Read (and drop) whatever comes until the server closes the connection."""
        while not self._eof:
            await self._receive()

    async def reply(self) -> Reply | None:
        head = await self.head()
        return None if head is None else await self.rest(head)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self.stream.aclose()


@asynccontextmanager
async def connect(port: int) -> AsyncIterator[Conn]:
    conn = Conn(await anyio.connect_tcp("127.0.0.1", port))
    try:
        yield conn
    finally:
        await conn.aclose()


async def exchange(port: int, data: bytes, *, method: str = "POST") -> Reply | None:
    """Send `data` on a fresh connection and read one full response."""
    async with connect(port) as conn:
        conn.expect(method)
        await conn.send(data)
        return await conn.reply()


@dataclass
class Spy:
    """ASGI middleware recording what the app saw and did."""

    app: Any
    requests: list[tuple[str, str]] = field(default_factory=lambda: list[tuple[str, str]]())
    responses: list[tuple[int, list[tuple[bytes, bytes]]]] = field(
        default_factory=lambda: list[tuple[int, list[tuple[bytes, bytes]]]]()
    )
    in_flight: int = 0
    # Request body bytes and body messages the app has received so far (all requests).
    body_bytes: int = 0
    body_messages: int = 0
    receive_calls: int = 0
    allowed_5xx: set[int] = field(default_factory=lambda: set[int]())

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.requests.append((scope["method"], scope["path"]))
        self.in_flight += 1

        async def spy_receive() -> Any:
            self.receive_calls += 1
            message = await receive()
            if message["type"] == "http.request":
                self.body_bytes += len(message.get("body", b""))
                self.body_messages += 1
            return message

        async def spy_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                self.responses.append((message["status"], list(message.get("headers", []))))
            await send(message)

        try:
            await self.app(scope, spy_receive, spy_send)
        finally:
            self.in_flight -= 1

    def verify(self) -> None:
        """No unexpected 5xx, and nothing but clean visible ASCII in any response header the app sent."""
        for status, headers in self.responses:
            assert status < 500 or status in self.allowed_5xx, (status, headers)
            for name, value in headers:
                assert _CLEAN_NAME.fullmatch(name), (status, name)
                assert _CLEAN_HEADER.fullmatch(value), (status, name, value)


class ErrorLog(logging.Handler):
    """Collects ERROR records of the app and of the ASGI servers (a crash shows up here)."""

    LOGGERS: Final = ("asgi_mcp", "uvicorn.error", "hypercorn.error", "mcp")

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def attach(self) -> ErrorLog:
        # Attached after the server configured its loggers (uvicorn's dictConfig drops handlers).
        for name in self.LOGGERS:
            logging.getLogger(name).addHandler(self)
        return self

    def detach(self) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).removeHandler(self)

    def summary(self) -> list[str]:
        return [f"{r.name}: {r.getMessage()} {r.exc_text or ''}" for r in self.records]
