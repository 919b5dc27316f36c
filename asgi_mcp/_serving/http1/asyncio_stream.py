"""The built-in server's byte stream on asyncio (`socket_stream.py`): the loop's readiness callbacks.

asyncio runs ready tasks first in, first out, so a plain yield (`sleep(0)`) is the connections'
turn after an answer. A wait registers the socket with the loop for that wait only (`add_reader`,
`add_writer`); under load a connection finds its next request after its turn and does not wait.
"""

from __future__ import annotations

import asyncio
import socket
import types
from collections.abc import Awaitable, Callable, Generator

from .socket_stream import DirectSocketStream

__all__ = ["AsyncioSocketStream", "asyncio_stream_opener"]


@types.coroutine
def _yield() -> Generator[None, None, None]:
    """A turn for the others: what `asyncio.sleep(0)` does (a bare yield to the task), one coroutine less."""
    yield


class AsyncioSocketStream(DirectSocketStream):
    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(sock, _yield)
        self._loop = loop
        self._fd = sock.fileno()
        self._readable: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None

    async def _wait_readable(self) -> None:
        loop = self._loop
        waiter = self._readable = loop.create_future()
        try:
            await self._wait(waiter, loop.add_reader, loop.remove_reader)
        finally:
            self._readable = None

    async def _wait_writable(self) -> None:
        loop = self._loop
        waiter = self._writable = loop.create_future()
        try:
            await self._wait(waiter, loop.add_writer, loop.remove_writer)
        finally:
            self._writable = None

    async def _wait(
        self, waiter: asyncio.Future[None], watch: Callable[..., object], unwatch: Callable[[int], object]
    ) -> None:
        """The socket watched by the loop for this wait only."""
        fd = self._fd
        watch(fd, _wake, waiter)
        try:
            await waiter
        finally:
            if not self._closed:  # (an abort has unwatched it already, before closing the socket)
                unwatch(fd)
        self._check_open()

    async def _checkpoint(self) -> None:
        await _yield()

    async def _before_send(self) -> None:
        pass  # asyncio delivers a cancellation at the next yield: the one after the send

    async def _after_send(self) -> None:
        await _yield()

    def _wake_waiters(self) -> None:
        # Unregistered before the socket is closed: the loop must not watch a descriptor that a new
        # connection may get next.
        if self._readable is not None:
            self._loop.remove_reader(self._fd)
            _wake(self._readable)
        if self._writable is not None:
            self._loop.remove_writer(self._fd)
            _wake(self._writable)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def asyncio_stream_opener() -> Callable[[socket.socket], Awaitable[DirectSocketStream]]:
    """What opens a server's connections as streams on the running asyncio loop."""
    loop = asyncio.get_running_loop()  # once: on Python 3.11 each lookup costs a `getpid` system call

    async def open_asyncio_stream(sock: socket.socket) -> DirectSocketStream:
        """A connected, non-blocking socket as a stream."""
        return AsyncioSocketStream(sock, loop)

    return open_asyncio_stream
