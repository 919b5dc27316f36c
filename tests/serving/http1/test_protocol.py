"""The built-in HTTP/1.1 server, over raw sockets: framing, keep-alive, pipelining, streaming.

Every test runs on asyncio and Trio and with both parsers (h11, httptools).
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from asgi_mcp._core.asgi import REQUEST_CANCEL_EXTENSION, SEND_TIMEOUT_EXTENSION
from asgi_mcp._serving.http1 import ClientDisconnected
from tests.kit.builtin import PARSERS, builtin_server
from tests.kit.http1_app import Probe, ProbeApp
from tests.kit.raw_http import Conn, connect

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@pytest.fixture(params=PARSERS)
def parser(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@asynccontextmanager
async def serving(parser: str, probe: Probe | None = None, **options: Any) -> AsyncIterator[tuple[int, Probe]]:
    probe = probe or Probe()
    with anyio.fail_after(20):
        async with builtin_server(ProbeApp(probe), parser, **options) as address:
            yield address.port, probe


def get(path: str, *headers: str, method: str = "GET") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "host: t", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post(path: str, body: bytes, *headers: str) -> bytes:
    return get(path, f"content-length: {len(body)}", *headers, method="POST") + body


async def reply_on(conn: Conn, data: bytes, method: str = "GET") -> Any:
    conn.expect(method)
    await conn.send(data)
    reply = await conn.reply()
    assert reply is not None
    return reply


async def test_keep_alive_serves_requests_in_turn(parser: str) -> None:
    async with serving(parser) as (port, probe), connect(port) as conn:
        for text in (b"one", b"two", b"three"):
            reply = await reply_on(conn, post("/echo", text), "POST")
            assert (reply.status, reply.body) == (200, text)
            assert reply.header("connection") is None
        assert probe.requests == ["/echo"] * 3


async def test_pipelined_requests_are_answered_in_order(parser: str) -> None:
    async with serving(parser) as (port, _), connect(port) as conn:
        await conn.send(post("/echo", b"a") + post("/echo", b"bb") + get("/scope?x=1") + post("/echo", b"ccc"))
        bodies = []
        for method in ("POST", "POST", "GET", "POST"):
            conn.expect(method)
            reply = await conn.reply()
            assert reply is not None
            assert reply.status == 200
            bodies.append(reply.body)
        assert bodies[:2] == [b"a", b"bb"]
        assert bodies[3] == b"ccc"
        assert json.loads(bodies[2])["query_string"] == "x=1"


async def test_chunked_both_ways(parser: str) -> None:
    async with serving(parser) as (port, _), connect(port) as conn:
        data = (
            get("/chunked", "transfer-encoding: chunked", method="POST")
            + b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nx-t: 1\r\n\r\n"
        )
        reply = await reply_on(conn, data, "POST")
        assert reply.status == 200
        assert reply.body == b"abcde"
        assert reply.header("transfer-encoding") == "chunked"
        # The connection is still usable after a chunked exchange.
        assert (await reply_on(conn, post("/echo", b"after"), "POST")).body == b"after"


async def test_expect_100_continue(parser: str) -> None:
    async with serving(parser) as (port, _):
        stream = await anyio.connect_tcp("127.0.0.1", port)
        async with stream:
            await stream.send(get("/echo", "content-length: 4", "expect: 100-continue", method="POST"))
            interim = await stream.receive()
            assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
            await stream.send(b"body")
            answer = await stream.receive()
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
            assert answer.endswith(b"\r\n\r\nbody")


async def test_expect_100_continue_after_the_app_started_its_response(parser: str) -> None:
    """A started response whose head still waits for its first body is not on the wire: the client
    may still be told to send its body."""
    async with serving(parser) as (port, _):
        stream = await anyio.connect_tcp("127.0.0.1", port)
        async with stream:
            await stream.send(get("/start-then-read", "content-length: 4", "expect: 100-continue", method="POST"))
            with anyio.fail_after(5):
                interim = await stream.receive()
            assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
            await stream.send(b"body")
            answer = b""
            while not answer.endswith(b"\r\n0\r\n\r\n"):
                answer += await stream.receive()
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
            assert answer.endswith(b"\r\n\r\n4\r\nbody\r\n0\r\n\r\n")


async def test_head_has_no_body_and_keeps_the_connection(parser: str) -> None:
    async with serving(parser) as (port, _), connect(port) as conn:
        reply = await reply_on(conn, get("/scope", method="HEAD"), "HEAD")
        assert reply.status == 200
        assert reply.body == b""
        assert reply.header("content-length") is not None
        assert (await reply_on(conn, post("/echo", b"x"), "POST")).body == b"x"


async def test_connection_close_is_honoured(parser: str) -> None:
    async with serving(parser) as (port, _), connect(port) as conn:
        reply = await reply_on(conn, post("/echo", b"x", "connection: close"), "POST")
        assert reply.header("connection") == "close"
        await conn.wait_closed()


async def test_http_1_0_closes_after_an_unsized_response(parser: str) -> None:
    async with serving(parser) as (port, _):
        stream = await anyio.connect_tcp("127.0.0.1", port)
        async with stream:
            await stream.send(b"POST /chunked HTTP/1.0\r\ncontent-length: 2\r\n\r\nhi")
            received = b""
            with anyio.fail_after(5):
                while chunk := await _receive(stream):
                    received += chunk
            head, _, body = received.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            assert b"transfer-encoding" not in head.lower()
            assert body == b"hi"


async def _receive(stream: Any) -> bytes:
    try:
        return bytes(await stream.receive())
    except (anyio.EndOfStream, anyio.BrokenResourceError):
        return b""


async def test_streamed_events_are_flushed_at_once(parser: str) -> None:
    async with serving(parser) as (port, probe), connect(port) as conn:
        conn.expect("GET")
        await conn.send(get("/stream"))
        head = await conn.head()
        assert head is not None
        assert head.status == 200
        # The first event arrives while the app still waits at its gate.
        assert await conn.chunk() == b"data: one\n\n"
        assert not probe.gate.is_set()
        probe.gate.set()
        assert await conn.chunk() == b"data: two\n\n"


async def leave_while_streaming(port: int, probe: Probe, path: str) -> None:
    """GET `path`, read the response's head, and close the connection once the app streams."""
    async with connect(port) as conn:
        conn.expect("GET")
        await conn.send(get(path))
        assert await conn.head() is not None
        await probe.started.wait()


async def test_disconnect_is_delivered_while_streaming(parser: str) -> None:
    async with serving(parser) as (port, probe):
        await leave_while_streaming(port, probe, "/stream")
        with anyio.fail_after(5):
            await probe.disconnected.wait()
            await probe.finished.wait()


async def test_a_slow_reader_blocks_the_sender(parser: str) -> None:
    async with serving(parser) as (port, probe), connect(port) as conn:
        await conn.send(get("/flood"))
        with anyio.fail_after(10):
            while True:  # the app runs until the socket buffers are full
                before = probe.sent_bytes
                await anyio.wait_all_tasks_blocked()
                if probe.sent_bytes == before and before > 0:
                    break
        assert probe.sent_bytes < 32 * 1024 * 1024, "send never blocked"
        assert not probe.finished.is_set()


async def test_a_stream_that_never_waits_leaves_other_connections_their_turn(parser: str) -> None:
    # Writes that the socket takes at once skip the stream's yield, but only a few in a row: a
    # connection only writing must not hold the loop until its socket buffer is full.
    async with serving(parser) as (port, probe), connect(port) as streaming, connect(port) as other:
        streaming.expect("GET")
        await streaming.send(get("/trickle"))
        with anyio.fail_after(10):
            head = await streaming.head()
            assert head is not None
            assert head.status == 200
            reply = await reply_on(other, post("/echo", b"x"), "POST")
        assert (reply.status, reply.body) == (200, b"x")
        # Not read by the client, the stream would fill its socket buffers (megabytes on loopback)
        # before its first yield; a few writes per turn are far less meanwhile.
        assert probe.sent_bytes < 64 * 1024


async def test_write_timeout_ends_a_stalled_connection(parser: str) -> None:
    async with serving(parser, write_timeout=0.3) as (port, probe), connect(port) as conn:
        await conn.send(get("/flood"))
        with anyio.fail_after(10):
            await probe.finished.wait()  # its send failed at the write timeout
        assert probe.sent_bytes < 64 * 1024 * 1024


async def test_write_timeout_ends_a_stalled_send_made_under_a_shield(parser: str) -> None:
    """The timeout aborts the socket as well: a cancellation alone would not reach this send, and the
    server promises every send its write timeout (in each scope: `SEND_TIMEOUT_EXTENSION`)."""
    async with serving(parser, write_timeout=0.3) as (port, probe), connect(port) as conn:
        await conn.send(get("/flood-shielded"))
        with anyio.fail_after(10):
            await probe.finished.wait()  # the stalled send failed; the rest went nowhere
            await conn.wait_closed()
        [scope] = probe.scopes
        assert scope["extensions"][SEND_TIMEOUT_EXTENSION] == {"seconds": 0.3}


async def test_a_write_timeout_fails_the_send_and_cancels_nothing(parser: str) -> None:
    """The stalled write is aborted: the app's `send` fails, and its call goes on (while it runs,
    only the app itself and a hard stop cancel it: `REQUEST_CANCEL_EXTENSION`)."""
    async with serving(parser, write_timeout=0.3) as (port, probe), connect(port) as conn:
        await conn.send(get("/flood-then-go-on"))
        with anyio.fail_after(10):
            await probe.finished.wait()
            await conn.wait_closed()
        assert isinstance(probe.send_error, ClientDisconnected)
        assert probe.went_on


async def test_an_app_cancels_its_call_through_the_server(parser: str) -> None:
    """`REQUEST_CANCEL_EXTENSION`, called from another task: the call, in no scope of its own, is
    cancelled at its wait, answers under a shield, and the connection ends after that answer."""
    async with serving(parser) as (port, probe), connect(port) as conn:
        conn.expect("POST")
        await conn.send(post("/cancel-me", b""))
        with anyio.fail_after(10):
            await probe.started.wait()
            assert probe.cancel_call is not None
            probe.cancel_call()
            reply = await conn.reply()
            assert reply is not None
            assert (reply.status, reply.body, reply.header("connection")) == (200, b"cancelled", "close")
            await conn.wait_closed()
        assert probe.cancelled == ["/cancel-me"]


async def test_a_canceller_called_once_its_call_returned_does_nothing(parser: str) -> None:
    async with serving(parser) as (port, probe), connect(port) as conn:
        first = await reply_on(conn, post("/echo", b"one"), "POST")
        probe.scopes[0]["extensions"][REQUEST_CANCEL_EXTENSION].cancel()
        second = await reply_on(conn, post("/echo", b"two"), "POST")
        assert (first.body, second.body) == (b"one", b"two")
        assert second.header("connection") is None  # still kept alive


@pytest.mark.parametrize(
    ("method", "query"),
    [("POST", ""), ("HEAD", ""), ("POST", "?status=404"), ("POST", "?status=204"), ("POST", "?status=304")],
)
async def test_a_whole_json_answer_is_written_as_its_two_messages_are(parser: str, method: str, query: str) -> None:
    """`DIRECT_JSON_EXTENSION` against `send_json_bytes`'s two messages, on one connection: the
    same status, header lines in the same order and body, and the connection kept alive after both."""
    async with serving(parser) as (port, _), connect(port) as conn:
        replies = []
        for path in (f"/json{query}", f"/direct/json{query}", f"/json{query}"):
            request = get(path, "content-length: 8", method=method) + b'{"a": 1}'
            reply = await reply_on(conn, request, method)
            replies.append((reply.status, [line for line in reply.headers if line[0] != b"date"], reply.body))
    assert replies[0] == replies[1] == replies[2]
    status, headers, body = replies[1]
    assert status == (int(query.split("=")[1]) if query else 200)
    if status not in (204, 304):
        assert headers == [(b"content-type", b"application/json"), (b"content-length", b"8")]
        assert body == (b"" if method == "HEAD" else b'{"a": 1}')


async def test_a_second_whole_json_answer_fails_as_a_second_start_does(parser: str) -> None:
    async with serving(parser) as (port, probe), connect(port) as conn:
        errors = []
        for path in ("/json?twice", "/direct/json?twice"):
            probe.send_error = None
            reply = await reply_on(conn, post(path, b"[1]"), "POST")
            assert (reply.status, reply.body, reply.header("connection")) == (200, b"[1]", None)
            errors.append(str(probe.send_error))
            # Nothing more went out: the next request's answer is its own.
            assert (await reply_on(conn, post("/echo", b"next"), "POST")).body == b"next"
        assert errors[0] == errors[1] == "expected http.response.body, got 'http.response.start'"


async def test_a_head_waits_for_the_first_body_message(parser: str) -> None:
    """As the ASGI spec asks: a started response is not on the wire until its first body message,
    and then goes out with it (one write for a streamed answer's head and first event)."""
    # A plain socket, peeked at without waiting (an asyncio stream's loop would read it at once).
    async with serving(parser) as (port, probe):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.setblocking(False)
            sock.sendall(get("/late-body"))
            await probe.started.wait()
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(BlockingIOError):
                sock.recv(1, socket.MSG_PEEK)
            probe.gate.set()
            data = b""
            while not data.endswith(b"\r\n0\r\n\r\n"):
                await anyio.wait_readable(sock)
                data += sock.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert body == b"c\r\ndata: late\n\n\r\n0\r\n\r\n"


async def test_a_send_after_the_client_left_raises_oserror(parser: str, caplog: pytest.LogCaptureFixture) -> None:
    """ASGI 2.4, which every scope declares: an app streaming to nobody learns it from `send` (an
    `OSError`), and one that lets it propagate is not logged as failing."""
    caplog.set_level(logging.DEBUG, "asgi_mcp")
    async with serving(parser) as (port, probe):
        await leave_while_streaming(port, probe, "/until-gone")
        with anyio.fail_after(10):
            await probe.finished.wait()
    assert isinstance(probe.send_error, OSError)
    assert probe.scopes[0]["asgi"]["spec_version"] == "2.4"
    assert [record.levelname for record in caplog.records if record.levelno >= logging.ERROR] == []


async def test_a_client_that_half_closes_still_gets_its_answer(parser: str) -> None:
    """The end of the client's stream is `http.disconnect` for the app, but `send` still writes: a
    client may half-close once its request is sent and read the answer."""
    async with serving(parser) as (port, _), connect(port) as conn:
        conn.expect("GET")
        await conn.send(get("/reply-after-disconnect"))
        await conn.send_eof()
        with anyio.fail_after(5):
            reply = await conn.reply()
        assert reply is not None
        assert (reply.status, reply.body) == (200, b"answered")


async def test_a_starlette_stream_ends_when_its_client_leaves(parser: str) -> None:
    """Told ASGI 2.4, Starlette's `StreamingResponse` no longer listens for `http.disconnect`: it
    counts on `send` raising. An endless stream must end with its client."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    async def ticks() -> AsyncIterator[bytes]:
        while True:
            yield b"data: tick\n\n"
            await anyio.lowlevel.checkpoint()

    async def events(request: Request) -> StreamingResponse:
        return StreamingResponse(ticks(), media_type="text/event-stream")

    framework = Starlette(routes=[Route("/events", events)])
    ended = anyio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            await framework(scope, receive, send)
        finally:
            if scope["type"] == "http":
                ended.set()

    with anyio.fail_after(20):
        async with builtin_server(app, parser) as address:
            async with connect(address.port) as conn:
                conn.expect("GET")
                await conn.send(get("/events"))
                assert await conn.head() is not None
                assert (await conn.chunk()).startswith(b"data: tick")
            with anyio.fail_after(10):
                await ended.wait()


async def test_app_errors_answer_500_or_close(parser: str) -> None:
    async with serving(parser) as (port, _):
        async with connect(port) as conn:
            reply = await reply_on(conn, get("/boom"))
            assert reply.status == 500
            assert reply.header("connection") == "close"
        for path in ("/boom-at-start", "/start-only", "/overlong"):  # started, but nothing on the wire yet
            async with connect(port) as conn:
                reply = await reply_on(conn, get(path))
                assert reply.status == 500
                assert reply.header("connection") == "close"
        async with connect(port) as conn:
            reply = await reply_on(conn, get("/silent"))
            assert reply.status == 500
        async with connect(port) as conn:
            conn.expect("GET")
            await conn.send(get("/boom-late"))
            head = await conn.head()
            assert head is not None
            assert head.status == 200
            await conn.wait_closed()  # a started response cannot be completed: the connection ends
        async with connect(port) as conn:
            reply = await reply_on(conn, get("/badheader"))
            assert reply.status == 500
            assert reply.header("x-injected") is None


async def test_upgrade_requests_are_served_as_http(parser: str) -> None:
    async with serving(parser) as (port, probe), connect(port) as conn:
        upgrade = get("/scope", "connection: upgrade", "upgrade: websocket", "sec-websocket-version: 13")
        reply = await reply_on(conn, upgrade)
        assert reply.status == 200
        assert probe.scopes[-1]["type"] == "http"


async def test_a_reader_the_app_left_behind_does_not_break_the_next_request(parser: str) -> None:
    async with serving(parser) as (port, _), connect(port) as conn:
        assert (await reply_on(conn, get("/leak"))).body == b"left a reader"
        assert (await reply_on(conn, post("/echo", b"next"), "POST")).body == b"next"
