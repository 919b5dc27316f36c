"""The stream each connection of the built-in server reads and writes (`socket_stream.py`: the socket's
own calls, with the waits of asyncio, `asyncio_stream.py`, or of Trio, `trio_stream.py`), over a
real socket pair."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import pytest

from asgi_mcp._io.loop import Loop
from asgi_mcp._serving.http1.server import _stream_opener, prepare_accepted
from asgi_mcp._serving.http1.socket_stream import DirectSocketStream

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

pytestmark = pytest.mark.anyio

CHUNK = 64 * 1024


@asynccontextmanager
async def stream_and_peer() -> AsyncIterator[tuple[anyio.abc.SocketStream, socket.socket]]:
    ours, peer = socket.socketpair()
    peer.setblocking(False)
    prepare_accepted(ours)  # as the server does for each accepted socket
    stream = await _stream_opener(Loop.current().trio)(ours)
    try:
        yield stream, peer
    finally:
        await anyio.aclose_forcefully(stream)
        peer.close()


def flood(peer: socket.socket) -> int:
    """Send until the socket would block; the bytes it took."""
    sent = 0
    with contextlib.suppress(BlockingIOError):
        while True:
            sent += peer.send(b"x" * CHUNK)
    return sent


async def test_bytes_arrive_in_order_and_the_end_is_end_of_stream() -> None:
    async with stream_and_peer() as (stream, peer):
        peer.send(b"abc")
        peer.send(b"defgh")
        received = b""
        with anyio.fail_after(10):
            while len(received) < 8:
                received += await stream.receive(3)
        assert received == b"abcdefgh"
        peer.shutdown(socket.SHUT_WR)
        with anyio.fail_after(10), pytest.raises(anyio.EndOfStream):
            await stream.receive()
        await stream.send(b"answer after a half-close")
        assert peer.recv(100) == b"answer after a half-close"


async def test_a_peer_that_floods_an_unread_connection_is_held_back() -> None:
    # What is not read stays in TCP's hands past a bounded read-ahead: the peer's sends block.
    async with stream_and_peer() as (stream, peer):
        total = 0
        for _ in range(50):
            total += flood(peer)
            for _ in range(10):
                await anyio.lowlevel.checkpoint()  # the loop reads what it will
        assert total < 8 * 1024 * 1024, f"{total} bytes went into an unread connection"
        received = 0
        with anyio.fail_after(10):
            while received < total:
                received += len(await stream.receive())
        assert received == total


async def test_writing_to_a_peer_that_left_is_a_broken_resource() -> None:
    async with stream_and_peer() as (stream, peer):
        peer.close()

        async def send_until_refused() -> None:
            for _ in range(100):
                await stream.send(b"y" * CHUNK)

        with anyio.fail_after(10), pytest.raises(anyio.BrokenResourceError):
            await send_until_refused()


async def test_a_closed_stream_refuses_to_be_used() -> None:
    async with stream_and_peer() as (stream, _):
        await stream.aclose()
        with pytest.raises(anyio.ClosedResourceError):
            await stream.send(b"z")


async def test_aborting_ends_a_send_stalled_under_a_shield() -> None:
    """The write timeout's abort, from another task: the send waiting on a peer that reads nothing
    fails at once, though a shield keeps cancellation away from it; the stream is closed after."""
    async with stream_and_peer() as (stream, _):
        ended: list[BaseException] = []

        async def send_until_stalled() -> None:
            with anyio.CancelScope(shield=True):
                try:
                    while True:
                        await stream.send(b"y" * CHUNK)
                except anyio.ClosedResourceError as exc:
                    ended.append(exc)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(send_until_stalled)
                await anyio.wait_all_tasks_blocked()  # the peer's buffers are full: the send waits
                assert isinstance(stream, DirectSocketStream)
                stream.abort()
        assert len(ended) == 1
        with pytest.raises(anyio.ClosedResourceError):
            await stream.send(b"z")


async def test_an_accepted_tcp_connection_does_not_wait_for_acks() -> None:
    # No Nagle: an SSE head and its events are separate small writes.
    with socket.create_server(("127.0.0.1", 0)) as listening, socket.create_connection(listening.getsockname()):
        accepted, _ = listening.accept()
        prepare_accepted(accepted)
        stream = await _stream_opener(Loop.current().trio)(accepted)
        try:
            raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
            assert raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        finally:
            await anyio.aclose_forcefully(stream)


def receive_next(stream: anyio.abc.SocketStream) -> Callable[[int], Awaitable[bytes]]:
    """What the connection calls to wait for a request after an answer (see `HttpConnection.read_more`)."""
    method: Callable[[int], Awaitable[bytes]] = getattr(stream, "receive_next", stream.receive)
    return method


async def test_the_wait_after_an_answer_gets_what_the_peer_sends_then_the_end() -> None:
    async with stream_and_peer() as (stream, peer):
        async with anyio.create_task_group() as tasks:
            got: list[bytes] = []

            async def wait() -> None:
                got.append(await receive_next(stream)(100))

            tasks.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            assert got == []  # nothing sent yet: it waits
            peer.send(b"next request")
        assert got == [b"next request"]
        peer.send(b"already here")  # and data already waiting is read too
        with anyio.fail_after(10):
            assert await receive_next(stream)(100) == b"already here"
        peer.shutdown(socket.SHUT_WR)
        with anyio.fail_after(10), pytest.raises(anyio.EndOfStream):
            await receive_next(stream)(100)


async def test_closing_a_stream_ends_a_wait_on_it_and_a_cancelled_wait_loses_nothing() -> None:
    async with stream_and_peer() as (stream, peer):
        with anyio.move_on_after(0) as waited:
            await receive_next(stream)(100)
        assert waited.cancelled_caught
        peer.send(b"kept")
        with anyio.fail_after(10):
            assert await stream.receive(100) == b"kept"
        ended: list[BaseException] = []

        async def wait() -> None:
            try:
                await receive_next(stream)(100)
            except anyio.ClosedResourceError as exc:
                ended.append(exc)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(wait)
                await anyio.wait_all_tasks_blocked()
                await stream.aclose()
        assert len(ended) == 1


async def test_a_receive_with_data_waiting_still_lets_other_tasks_run() -> None:
    # A client that keeps its connection full must not starve the other connections: each receive
    # yields once. (Trio runs the tasks of one batch in either order, so this counts turns.)
    async with stream_and_peer() as (stream, peer):
        peer.send(b"x" * 1000)
        other = AlwaysReady()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(other.run)
            with anyio.fail_after(10):
                for _ in range(50):
                    assert len(await stream.receive(10)) == 10
            tasks.cancel_scope.cancel()
        assert other.turns >= 40


class AlwaysReady:
    """A task that never waits, counting the turns it gets."""

    def __init__(self) -> None:
        self.turns = 0

    async def run(self) -> None:
        while True:
            self.turns += 1
            await anyio.lowlevel.checkpoint()


async def test_the_first_receive_returns_waiting_data_without_a_yield(anyio_backend_name: str) -> None:
    # A new connection's task has just had its turn to start: when its request is already there,
    # the first read returns it at once, so a connection that carries one request is served in one
    # step, instead of parking beside every connection accepted in the same burst (under a client
    # opening a connection per request, those parked objects ran the cycle collector every ~30
    # connections, and its full collections put ~30 ms stalls in the tail). Later reads yield.
    async with stream_and_peer() as (stream, peer):
        peer.send(b"x" * 100)
        async with yields_of_this_task(anyio_backend_name) as yields:
            assert len(await stream.receive(10)) == 10
            assert yields() == 0
            assert len(await stream.receive(10)) == 10
            assert yields() == 1


@asynccontextmanager
async def yields_of_this_task(backend: str) -> AsyncIterator[Callable[[], int]]:
    """How many times the current task has yielded to the scheduler since the block began."""
    if backend == "trio":
        import trio

        class Steps(trio.abc.Instrument):
            def __init__(self) -> None:
                self.task = trio.lowlevel.current_task()
                self.count = 0

            def before_task_step(self, task: trio.lowlevel.Task) -> None:
                self.count += task is self.task

        steps = Steps()
        trio.lowlevel.add_instrument(steps)
        try:
            yield lambda: steps.count
        finally:
            trio.lowlevel.remove_instrument(steps)
        return
    # asyncio runs ready tasks first in, first out: a task that is always ready takes exactly one
    # turn each time this one yields.
    other = AlwaysReady()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(other.run)
        await anyio.lowlevel.checkpoint()  # it has started
        started = other.turns
        yield lambda: other.turns - started
        tasks.cancel_scope.cancel()


def fds_polled_for_this_process() -> set[int]:
    """The descriptors registered in this process's epoll instances (Linux: /proc/self/fdinfo)."""
    polled: set[int] = set()
    for entry in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{entry}") != "anon_inode:[eventpoll]":
                continue
            with open(f"/proc/self/fdinfo/{entry}") as info:
                lines = info.read().splitlines()
        except OSError:
            continue
        polled.update(int(line.split()[1]) for line in lines if line.startswith("tfd:"))
    return polled


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads epoll's interest list from /proc")
async def test_a_request_waiting_on_a_new_connection_is_read_and_answered_without_a_readiness_wait() -> None:
    # A connection that carries one request (a client or proxy that does not keep connections) is
    # served with the socket's own calls: it is never registered with the I/O manager. On asyncio
    # the transport, which would register it, is made only once a read has to wait.
    async with stream_and_peer() as (stream, peer):
        fd = stream.extra(anyio.abc.SocketAttribute.raw_socket).fileno()
        peer.send(b"request")
        with anyio.fail_after(10):
            assert await stream.receive(100) == b"request"
        await stream.send(b"answer")
        assert fd not in fds_polled_for_this_process()
        assert peer.recv(100) == b"answer"
        # With nothing to read, the stream waits for readiness (so the probe above sees a registration;
        # uvloop makes it at its next poll).
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(stream.receive, 100)
                await anyio.wait_all_tasks_blocked()
                while fd not in fds_polled_for_this_process():
                    await anyio.lowlevel.checkpoint()
                peer.send(b"later")


async def test_an_abort_ends_a_wait_for_data_and_closes_the_connection() -> None:
    # The write timeout's abort, or a hard stop's, from another task: the wait is woken and the
    # socket closed, and the peer reads the end. The wait is unregistered first: the next connection
    # gets the same descriptor, and its own waits must work.
    async with stream_and_peer() as (stream, peer):
        fd = stream.extra(anyio.abc.SocketAttribute.raw_socket).fileno()
        ended: list[BaseException] = []

        async def wait() -> None:
            try:
                await stream.receive(100)
            except anyio.ClosedResourceError as exc:
                ended.append(exc)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(wait)
                await anyio.wait_all_tasks_blocked()  # the wait has begun
                assert isinstance(stream, DirectSocketStream)
                stream.abort()
        assert len(ended) == 1
        peer.setblocking(True)
        peer.settimeout(10)
        assert peer.recv(100) == b""  # closed: the peer reads the end
        async with stream_and_peer() as (next_stream, next_peer):
            assert next_stream.extra(anyio.abc.SocketAttribute.raw_socket).fileno() == fd
            with anyio.fail_after(10):
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(next_stream.receive, 100)
                    await anyio.wait_all_tasks_blocked()
                    next_peer.send(b"served")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads epoll's interest list from /proc")
async def test_the_wait_after_an_answer_reads_what_came_during_its_yield_without_a_readiness_wait() -> None:
    # Under load the peer's next request arrives while the other connections take their turns: the
    # wait after an answer yields first and reads it then, without registering the socket with the
    # I/O manager (an epoll_ctl call a request).
    async with stream_and_peer() as (stream, peer):
        fd = stream.extra(anyio.abc.SocketAttribute.raw_socket).fileno()
        peer.send(b"next request")
        with anyio.fail_after(10):
            assert await receive_next(stream)(100) == b"next request"
        assert fd not in fds_polled_for_this_process()
        # With nothing sent, it waits for readiness (so the probe above sees a registration).
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(receive_next(stream), 100)
                await anyio.wait_all_tasks_blocked()
                while fd not in fds_polled_for_this_process():
                    await anyio.lowlevel.checkpoint()
                peer.send(b"later")
