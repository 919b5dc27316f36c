"""The built-in server's limits, timeouts and refusals, over raw sockets; both parsers, both backends.

The refusal table is the same for h11 and httptools: that is the point of it.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import anyio.abc
import pytest

from tests.kit.http1_app import Probe
from tests.kit.raw_http import connect, exchange

from .test_protocol import get, parser, post, reply_on, serving

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

__all__ = ["parser"]

HOST = b"host: t\r\n"
BODY = b"content-length: 2\r\n"

REFUSED = [
    ("bare CR in a value", b"GET /echo HTTP/1.1\r\n" + HOST + b"x-a: a\rb\r\n\r\n", 400),
    ("bare LF line endings", b"GET /echo HTTP/1.1\n" + b"host: t\n\n", 400),
    ("obs-fold", b"GET /echo HTTP/1.1\r\n" + HOST + b"x-a: a\r\n b\r\n\r\n", 400),
    ("NUL in a value", b"GET /echo HTTP/1.1\r\n" + HOST + b"x-a: a\x00b\r\n\r\n", 400),
    ("CL and TE", b"POST /echo HTTP/1.1\r\n" + HOST + BODY + b"transfer-encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("TE gzip", b"POST /echo HTTP/1.1\r\n" + HOST + b"transfer-encoding: gzip\r\n\r\n", 400),
    ("TE gzip, chunked", b"POST /echo HTTP/1.1\r\n" + HOST + b"transfer-encoding: gzip, chunked\r\n\r\n", 400),
    ("TE twice", b"POST /echo HTTP/1.1\r\n" + HOST + b"transfer-encoding: chunked\r\n" * 2 + b"\r\n0\r\n\r\n", 400),
    ("CL twice, same value", b"POST /echo HTTP/1.1\r\n" + HOST + BODY * 2 + b"\r\nhi", 400),
    ("CL list", b"POST /echo HTTP/1.1\r\n" + HOST + b"content-length: 2, 2\r\n\r\nhi", 400),
    ("CL signed", b"POST /echo HTTP/1.1\r\n" + HOST + b"content-length: +2\r\n\r\nhi", 400),
    ("CL huge", b"POST /echo HTTP/1.1\r\n" + HOST + b"content-length: " + b"9" * 30 + b"\r\n\r\n", 400),
    ("no Host", b"GET /echo HTTP/1.1\r\n\r\n", 400),
    ("two Hosts", b"GET /echo HTTP/1.1\r\n" + HOST * 2 + b"\r\n", 400),
    ("HTTP/0.9", b"GET /echo\r\n\r\n", 400),
    ("HTTP/2.0 version", b"GET /echo HTTP/2.0\r\n" + HOST + b"\r\n", 400),
    ("unknown method", b"FOO /echo HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    ("lower-case method", b"get /echo HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    ("CONNECT", b"CONNECT t:443 HTTP/1.1\r\n" + HOST + b"\r\n", 501),
    ("space in a name", b"GET /echo HTTP/1.1\r\n" + HOST + b"x a: 1\r\n\r\n", 400),
    ("space before colon", b"GET /echo HTTP/1.1\r\n" + HOST + b"x-a : 1\r\n\r\n", 400),
    ("non-ASCII target", b"GET /\xc3\xa9 HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    ("relative target", b"GET echo HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    ("Upgrade with a body", b"POST /echo HTTP/1.1\r\n" + HOST + BODY + b"upgrade: h2c\r\n\r\nhi", 400),
    ("bad chunk size", b"POST /echo HTTP/1.1\r\n" + HOST + b"transfer-encoding: chunked\r\n\r\nzz\r\n", 400),
    ("chunk without CRLF", b"POST /echo HTTP/1.1\r\n" + HOST + b"transfer-encoding: chunked\r\n\r\n1\r\naXX", 400),
]


@pytest.mark.parametrize(("data", "status"), [(d, s) for _, d, s in REFUSED], ids=[i for i, _, _ in REFUSED])
async def test_refused_before_or_by_the_server(parser: str, data: bytes, status: int) -> None:
    async with serving(parser) as (port, probe):
        with anyio.fail_after(10):
            reply = await exchange(port, data, method="POST")
        assert reply is not None
        assert reply.status == status, reply
        assert reply.header("connection") == "close"
        # The app never answered: at most it saw a body that broke, answered by the server.
        assert probe.requests in ([], ["/echo"])
        # And the server still serves.
        async with connect(port) as conn:
            assert (await reply_on(conn, post("/echo", b"ok"), "POST")).body == b"ok"


ACCEPTED = [
    ("control character in a value", b"GET /echo HTTP/1.1\r\n" + HOST + b"x-a: a\x01b\r\n\r\n"),
    ("empty lines before the request", b"\r\n\r\nGET /echo HTTP/1.1\r\n" + HOST + b"\r\n"),
    ("absolute-form target", b"GET http://t/echo HTTP/1.1\r\n" + HOST + b"\r\n"),
    ("HTTP/1.0 without Host", b"GET /echo HTTP/1.0\r\n\r\n"),
    (
        "chunk extension and trailer",
        b"POST /echo HTTP/1.1\r\n" + HOST + b"transfer-encoding: Chunked\r\n\r\n2 ;a=b\r\nhi\r\n0\r\nx-t: 1\r\n\r\n",
    ),
]


@pytest.mark.parametrize("data", [d for _, d in ACCEPTED], ids=[i for i, _ in ACCEPTED])
async def test_accepted_edge_cases(parser: str, data: bytes) -> None:
    async with serving(parser) as (port, probe):
        with anyio.fail_after(10):
            reply = await exchange(port, data, method="POST")
        assert reply is not None
        assert reply.status == 200, reply
        assert probe.requests == ["/echo"]


async def test_header_limits(parser: str) -> None:
    async with serving(parser, max_header_bytes=1024, max_headers=10, max_request_line=200) as (port, probe):
        big = get("/echo", "x-big: " + "a" * 1100)
        many = get("/echo", *[f"x-{i}: 1" for i in range(11)])
        long_line = get("/echo?" + "q" * 300)
        ten = get("/echo", *[f"x-{i}: 1" for i in range(8)])  # host + 8 + nothing else: within 10
        for data, status in ((big, 431), (many, 431), (long_line, 414), (ten, 200)):
            with anyio.fail_after(10):
                reply = await exchange(port, data, method="GET")
            assert reply is not None
            assert reply.status == status, (status, reply)
        assert probe.requests == ["/echo"]


async def test_an_incomplete_long_request_line_is_refused_early(parser: str) -> None:
    async with serving(parser, max_request_line=200) as (port, _), connect(port) as conn:
        conn.expect("GET")
        await conn.send(b"GET /" + b"a" * 300)  # no line end yet
        with anyio.fail_after(10):
            reply = await conn.reply()
        assert reply is not None
        assert reply.status == 414


async def test_slow_headers_get_408_and_close(parser: str) -> None:
    async with serving(parser, headers_timeout=0.3) as (port, probe), connect(port) as conn:
        conn.expect("GET")
        await conn.send(b"GET /echo HTTP/1.1\r\nhost: t\r\n")  # never finished
        with anyio.fail_after(10):
            reply = await conn.reply()
            assert reply is not None
            assert reply.status == 408
            await conn.wait_closed()
        assert probe.requests == []


async def test_a_burst_of_connections_is_accepted_up_to_the_limit(parser: str) -> None:
    # Connections waiting together are accepted together: the limit holds inside one batch too.
    probe = Probe()
    async with (
        serving(parser, probe, max_connections=2) as (port, _),
        connect(port) as first,
        connect(port) as second,
        connect(port) as third,
    ):
        for conn in (first, second, third):
            conn.expect("POST")
        await first.send(post("/hold", b""))
        await second.send(post("/hold", b""))
        await third.send(post("/echo", b"third"))
        with anyio.move_on_after(0.2):
            await anyio.wait_all_tasks_blocked()
        assert probe.requests == ["/hold", "/hold"], "a connection was served over the limit"
        probe.gate.set()
        with anyio.fail_after(10):
            for conn in (first, second):
                held = await conn.reply()
                assert held is not None
                assert held.body == b"held"
        await first.aclose()  # a slot frees: the third connection gets in
        with anyio.fail_after(10):
            reply = await third.reply()
        assert reply is not None
        assert reply.body == b"third"


async def test_idle_keep_alive_connections_are_closed(parser: str) -> None:
    async with serving(parser, keepalive_timeout=0.3) as (port, _), connect(port) as conn:
        assert (await reply_on(conn, post("/echo", b"x"), "POST")).status == 200
        with anyio.fail_after(10):
            await conn.wait_closed()


async def test_connections_over_the_limit_wait_in_the_backlog(parser: str) -> None:
    probe = Probe()
    async with (
        serving(parser, probe, max_connections=1) as (port, _),
        connect(port) as first,
        connect(port) as second,
    ):
        first.expect("POST")
        await first.send(post("/hold", b"", "connection: close"))
        await probe.started.wait()
        second.expect("POST")
        await second.send(post("/echo", b"second"))
        with anyio.move_on_after(0.2):
            await anyio.wait_all_tasks_blocked()
        assert probe.requests == ["/hold"], "a second connection was served over the limit"
        probe.gate.set()
        with anyio.fail_after(10):
            assert (await first.reply()) is not None
            reply = await second.reply()
        assert reply is not None
        assert reply.body == b"second"


async def test_peers_that_reset_in_the_backlog_give_their_slot_back(parser: str) -> None:
    # Peers that reset their connection (SO_LINGER 0, then close) while it waits in the backlog
    # are gone by the time the server accepts them: asking the socket for its addresses fails.
    # Each one's slot comes back and the server goes on: with one slot, held by a request while
    # five peers come and go, a request after them is served.
    probe = Probe()
    async with serving(parser, probe, max_connections=1) as (port, _), connect(port) as holder:
        holder.expect("POST")
        await holder.send(post("/hold", b"", "connection: close"))
        await probe.started.wait()
        for _ in range(5):
            stream = await anyio.connect_tcp("127.0.0.1", port)
            raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await stream.aclose()
        probe.gate.set()
        with anyio.fail_after(10):
            assert (await holder.reply()) is not None
            reply = await exchange(port, b"GET /echo HTTP/1.1\r\nhost: t\r\n\r\n", method="GET")
        assert reply is not None
        assert reply.status == 200


async def test_a_burst_of_new_connections_starts_its_tasks_a_few_at_a_time(
    parser: str, anyio_backend_name: str
) -> None:
    # 32 connections wait in the backlog, each with its request: the server accepts them in one go,
    # but lets their tasks start 8 at a time. A task not started yet holds its objects (~25 the
    # cycle collector tracks, with anyio's task handle); 32 of them crossed the collector's young
    # threshold, so under a client opening a connection per request every burst ran a collection.
    async with serving(parser) as (port, probe):
        with unstarted_tasks(anyio_backend_name) as peak:
            # Blocking connects: the server's loop cannot run in between, so all 32 wait in the backlog.
            clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(32)]
            try:
                for client in clients:
                    client.sendall(get("/echo", "connection: close"))
                    client.setblocking(False)
                with anyio.fail_after(10):
                    answers = [await read_to_end(client) for client in clients]
            finally:
                for client in clients:
                    client.close()
        assert all(answer.startswith(b"HTTP/1.1 200 ") for answer in answers)
        assert len(probe.requests) == 32
        # Trio runs the batch that holds the accept loop and the 8 tasks it made in either order:
        # the loop may make 8 more before those 8 start.
        assert 1 <= peak() <= (16 if anyio_backend_name == "trio" else 8)


async def read_to_end(sock: socket.socket) -> bytes:
    data = b""
    while True:
        await anyio.wait_readable(sock)
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


@contextmanager
def unstarted_tasks(backend: str) -> Iterator[Callable[[], int]]:
    """The most tasks made in the block that were waiting to take their first step at once."""
    peak = 0
    if backend == "trio":
        import trio

        class Unstarted(trio.abc.Instrument):
            def __init__(self) -> None:
                self.waiting: set[trio.lowlevel.Task] = set()

            def task_spawned(self, task: trio.lowlevel.Task) -> None:
                nonlocal peak
                self.waiting.add(task)
                peak = max(peak, len(self.waiting))

            def before_task_step(self, task: trio.lowlevel.Task) -> None:
                self.waiting.discard(task)

        instrument = Unstarted()
        trio.lowlevel.add_instrument(instrument)
        try:
            yield lambda: peak
        finally:
            trio.lowlevel.remove_instrument(instrument)
        return
    loop = asyncio.get_running_loop()
    made: list[asyncio.Task[Any]] = []

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **options: Any) -> asyncio.Task[Any]:
        nonlocal peak
        task = asyncio.Task(coro, loop=loop, **options)
        made[:] = [t for t in made if inspect.getcoroutinestate(t.get_coro()) == inspect.CORO_CREATED]  # type: ignore[arg-type]
        made.append(task)
        peak = max(peak, len(made))
        return task

    previous = loop.get_task_factory()
    loop.set_task_factory(factory)
    try:
        yield lambda: peak
    finally:
        loop.set_task_factory(previous)
