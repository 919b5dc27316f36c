"""The built-in server's byte stream on asyncio: a protocol that keeps reading, instead of anyio's.

anyio's asyncio `SocketStream` stops reading between `receive` calls (`pause_reading` after each,
`resume_reading` before the next): two `epoll_ctl` calls per request on a keep-alive connection, and
an anyio checkpoint (a shielded cancel scope) around every `send`. Here the transport reads ahead up
to `_READ_AHEAD` bytes and is paused only past that (TCP's flow control then holds the peer), and a
`send` yields with a plain `sleep(0)`. The semantics are those of anyio's stream: `send` returns once
the kernel has taken every byte (write buffer limit 0), so closing may abort the transport; errors
are anyio's (`EndOfStream`, `BrokenResourceError`, `ClosedResourceError`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from typing import Final, cast

import anyio

from .abortable import AbortableSocketStream

__all__ = ["open_asyncio_stream"]

_READ_AHEAD: Final = 256 * 1024


class _Reader(asyncio.Protocol):
    def __init__(self) -> None:
        # Looked up once: each `get_running_loop()` costs a `getpid` system call (on Python 3.11).
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.reading_paused = False
        self.at_eof = False
        self.lost = False
        self.error: Exception | None = None
        self.readable: asyncio.Future[None] | None = None  # a receive waiting for data
        self.writable: asyncio.Future[None] | None = None  # set while the transport's buffer is not empty

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; uvloop's are not `asyncio.Transport` subclasses, so no isinstance test.
        stream = cast("asyncio.Transport", transport)
        self.transport = stream
        stream.set_write_buffer_limits(0)

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > _READ_AHEAD and not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self.at_eof = True
        self._wake_reader()
        return True  # half-close: the answer may still be written

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.error = exc
        self._wake_reader()
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)

    def pause_writing(self) -> None:
        if self.writable is None or self.writable.done():
            self.writable = self.loop.create_future()

    def resume_writing(self) -> None:
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)

    def _wake_reader(self) -> None:
        if self.readable is not None and not self.readable.done():
            self.readable.set_result(None)


class AsyncioSocketStream(AbortableSocketStream):
    def __init__(self, sock: socket.socket, transport: asyncio.Transport, reader: _Reader) -> None:
        self._socket = sock  # the socket itself (the transport's `socket` is a restricted view)
        self._transport = transport
        self._reader = reader
        self._closed = False

    @property
    def _raw_socket(self) -> socket.socket:
        return self._socket

    async def receive(self, max_bytes: int = 65536) -> bytes:
        reader = self._reader
        if reader.chunks:
            await asyncio.sleep(0)  # data is waiting: still a turn for the others (and a cancellation point)
        else:
            self._check_open()
            if reader.at_eof:
                raise anyio.EndOfStream
            waiter = reader.readable = reader.loop.create_future()
            try:
                await waiter
            finally:
                reader.readable = None
        if not reader.chunks:
            self._check_open()
            raise anyio.EndOfStream
        chunk = reader.chunks.popleft()
        if len(chunk) > max_bytes:
            reader.chunks.appendleft(chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        reader.buffered -= len(chunk)
        if reader.reading_paused and reader.buffered <= _READ_AHEAD // 2 and not self._transport.is_closing():
            reader.reading_paused = False
            self._transport.resume_reading()
        return chunk

    async def send(self, item: bytes) -> None:
        self._check_open()
        try:
            self._transport.write(item)
        except RuntimeError as exc:  # the transport is closing
            raise anyio.BrokenResourceError from exc
        writable = self._reader.writable
        if writable is not None and not writable.done():
            await writable  # until the kernel has taken it all
            self._check_open()
        else:
            await asyncio.sleep(0)

    async def send_eof(self) -> None:
        if self._transport.is_closing():
            return  # the peer is gone (uvloop raises rather than ignore a write_eof then)
        with contextlib.suppress(OSError, RuntimeError):
            self._transport.write_eof()

    def abort(self) -> None:
        self._closed = True
        self._transport.abort()  # a waiting `send` wakes on `connection_lost`, then finds the stream closed

    async def aclose(self) -> None:
        self.abort()  # nothing unsent: `send` waits until the kernel has it
        await asyncio.sleep(0)

    def _check_open(self) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        if self._reader.lost:
            raise anyio.BrokenResourceError from self._reader.error


async def open_asyncio_stream(sock: socket.socket) -> AbortableSocketStream:
    """A connected socket as a stream on the running asyncio loop."""
    transport, reader = await asyncio.get_running_loop().connect_accepted_socket(_Reader, sock)
    return AsyncioSocketStream(sock, transport, reader)
