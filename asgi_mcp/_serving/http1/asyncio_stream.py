"""The built-in server's byte stream on asyncio: the socket's own calls until a read must wait, then
a protocol that keeps reading, instead of anyio's.

anyio's asyncio `SocketStream` stops reading between `receive` calls (`pause_reading` after each,
`resume_reading` before the next): two `epoll_ctl` calls per request on a keep-alive connection, and
an anyio checkpoint (a shielded cancel scope) around every `send`. Here the transport reads ahead up
to `_READ_AHEAD` bytes and is paused only past that (TCP's flow control then holds the peer), and a
`send` yields with a plain `sleep(0)`. The semantics are those of anyio's stream: `send` returns once
the kernel has taken every byte (write buffer limit 0), so closing may abort the transport; errors
are anyio's (`EndOfStream`, `BrokenResourceError`, `ClosedResourceError`).

The transport is made only when a read has to wait (or a write cannot be taken at once). Until then
the stream reads and writes the socket itself: a new connection's request is usually there when its
task starts, and a connection that carries one request (a client or proxy that does not keep
connections) is then served without a transport, whose making takes the task through two more
turns of the loop. Those turns, with every connection accepted in the same burst parked in them,
are what ran the cycle collector under connection churn. As on Trio, the first read returns
waiting data without a yield (the task has only just had its turn to start); later ones yield.
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
    def __init__(self, sock: socket.socket) -> None:
        self._socket = sock  # non-blocking (`prepare_accepted`)
        self._transport: asyncio.Transport | None = None
        self._reader: _Reader | None = None
        self._owned = False  # the socket is the transport's (made, or being made): it closes it
        self._closed = False
        self._started = False  # a receive has returned

    @property
    def _raw_socket(self) -> socket.socket:
        return self._socket

    async def receive(self, max_bytes: int = 65536) -> bytes:
        reader = self._reader
        if reader is None:
            self._check_open()
            try:
                data = self._recv_now(max_bytes)
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                await asyncio.sleep(0)  # an end or an error is a turn for the others too, as with data
                raise
            if data is not None:
                if self._started:
                    await asyncio.sleep(0)  # data was waiting: still a turn for the others
                self._started = True
                return data
            _, reader = await self._attach()
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
        transport = self._transport
        if reader.reading_paused and reader.buffered <= _READ_AHEAD // 2 and transport and not transport.is_closing():
            reader.reading_paused = False
            transport.resume_reading()
        return chunk

    def _recv_now(self, max_bytes: int) -> bytes | None:
        """What the socket holds (before the transport), None while it holds nothing; raises at its
        end or on an error."""
        try:
            data = self._socket.recv(max_bytes)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise anyio.BrokenResourceError from exc
        if not data:
            raise anyio.EndOfStream
        return data

    async def _attach(self) -> tuple[asyncio.Transport, _Reader]:
        """The transport, made now: from here the loop reads the socket (and closes it).

        Shielded: a cancelled wait loses nothing (the connection reads on after the wait for a
        disconnect that a complete response cancels), and a cancelled attach would close the
        socket; it takes a turn or two of the loop, no network wait."""
        self._owned = True
        with anyio.CancelScope(shield=True):
            try:
                transport, reader = await asyncio.get_running_loop().connect_accepted_socket(_Reader, self._socket)
            except OSError as exc:
                raise anyio.BrokenResourceError from exc
            self._transport, self._reader = transport, reader
            if self._closed:  # aborted while the transport was being made
                transport.abort()
                raise anyio.ClosedResourceError
            return transport, reader
        raise AssertionError("unreachable: a scope that nobody cancels swallows nothing")

    async def send(self, item: bytes) -> None:
        self._check_open()
        transport = self._transport
        if transport is None:
            sent = self._send_now(item)
            if sent == len(item):
                await asyncio.sleep(0)
                return
            item = item[sent:]  # the socket is full: the transport waits until it takes the rest
            transport, _ = await self._attach()
        try:
            transport.write(item)
        except RuntimeError as exc:  # the transport is closing
            raise anyio.BrokenResourceError from exc
        writable = self._reader.writable if self._reader is not None else None
        if writable is not None and not writable.done():
            await writable  # until the kernel has taken it all
            self._check_open()
        else:
            await asyncio.sleep(0)

    def _send_now(self, item: bytes) -> int:
        """What the socket takes of `item` at once (before the transport)."""
        try:
            return self._socket.send(item)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise anyio.BrokenResourceError from exc

    async def send_eof(self) -> None:
        transport = self._transport
        if transport is None:
            if not self._owned:
                with contextlib.suppress(OSError):
                    self._socket.shutdown(socket.SHUT_WR)
            return
        if transport.is_closing():
            return  # the peer is gone (uvloop raises rather than ignore a write_eof then)
        with contextlib.suppress(OSError, RuntimeError):
            transport.write_eof()

    def abort(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.abort()  # a waiting `send` wakes on `connection_lost`, then finds the stream closed
        elif not self._owned:
            self._socket.close()  # not registered with the loop: nothing waits on it
        # else the transport is being made: `_attach` aborts it once it is

    async def aclose(self) -> None:
        self.abort()  # nothing unsent: `send` waits until the kernel has it
        await asyncio.sleep(0)

    def _check_open(self) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        reader = self._reader
        if reader is not None and reader.lost:
            raise anyio.BrokenResourceError from reader.error


async def open_asyncio_stream(sock: socket.socket) -> AbortableSocketStream:
    """A connected, non-blocking socket as a stream on the running asyncio loop."""
    return AsyncioSocketStream(sock)
