"""The built-in server's byte stream on Trio: the socket's own calls, with Trio's waits only when needed.

anyio's Trio stream goes through Trio's socket wrapper, which tries each call inside an async
context manager (a cancellation check, the call, a shielded checkpoint) and falls back to waiting
for readiness. Here the calls are the socket's own. `receive_next` (the read for a connection that
has just answered, whose socket was empty then) first lets the other tasks run, taking its turn in
order with the server's other connections (`turns.py`): under load its peer has sent the next
request by the time it runs again, so that is read without a readiness wait (which costs an
`epoll_ctl` call and a trip through the I/O manager); only a socket still empty waits.
`receive` tries the socket first and, when data is already there, still yields once (a checkpoint),
as anyio's stream does, so a client that keeps its connection full cannot starve the others; but not
on the stream's first read, whose task has only just had its turn to start: a connection carrying one
request is then served in one step, instead of waiting beside each connection accepted with it. `send`
returns once the kernel has taken every byte. Errors are anyio's (`EndOfStream`,
`BrokenResourceError`, `ClosedResourceError`).
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Awaitable, Callable

import anyio
import trio
from trio.lowlevel import cancel_shielded_checkpoint, checkpoint, checkpoint_if_cancelled, wait_readable, wait_writable

from .abortable import AbortableSocketStream
from .turns import Turns

__all__ = ["TrioSocketStream", "trio_stream_opener"]

# Errors that mean the socket was closed under us rather than that the peer went away.
_CLOSED_ERRNOS = frozenset((errno.EBADF, errno.ENOTSOCK))


class TrioSocketStream(AbortableSocketStream):
    def __init__(self, sock: socket.socket, turns: Turns) -> None:
        self._socket = sock  # non-blocking (`prepare_accepted`)
        self._turns = turns  # the server's: one queue of turns for all its connections
        self._closed = False
        self._started = False  # a receive has returned

    @property
    def _raw_socket(self) -> socket.socket:
        return self._socket

    async def receive(self, max_bytes: int = 65536) -> bytes:
        self._check_open()
        try:
            data = self._recv_now(max_bytes)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            await checkpoint()  # an end or an error is a checkpoint too, as with data
            raise
        if data is None:
            data = await self._read_when_ready(max_bytes)
        elif self._started:
            await checkpoint()  # data was waiting: still a turn for the others (and a cancellation point)
        self._started = True
        return data

    async def receive_next(self, max_bytes: int = 65536) -> bytes:
        """Read what the peer sends next, for a connection that has just answered: its socket was
        empty then, so yield first and try the socket after the others' turns; wait if still empty."""
        self._check_open()
        await self._turns.take()
        data = self._recv_now(max_bytes)  # under load, there by now: no wait
        return data if data is not None else await self._read_when_ready(max_bytes)

    def _recv_now(self, max_bytes: int) -> bytes | None:
        """What the socket holds, None while it holds nothing; raises at its end or on an error."""
        try:
            data = self._socket.recv(max_bytes)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise self._converted(exc) from exc
        if not data:
            raise anyio.EndOfStream
        return data

    async def _read_when_ready(self, max_bytes: int) -> bytes:
        """What the socket holds once it is readable (a wake-up may be spurious: then wait again)."""
        while True:
            await self._wait_readable()
            data = self._recv_now(max_bytes)
            if data is not None:
                return data

    async def _wait_readable(self) -> None:
        try:
            await wait_readable(self._socket)
        except trio.ClosedResourceError as exc:
            raise anyio.ClosedResourceError from exc

    async def send(self, item: bytes) -> None:
        self._check_open()
        await checkpoint_if_cancelled()
        sock = self._socket
        view = memoryview(item)
        blocked = False
        while view:
            try:
                sent = sock.send(view)
            except BlockingIOError:
                blocked = True
                try:
                    await wait_writable(sock)
                except trio.ClosedResourceError as exc:
                    raise anyio.ClosedResourceError from exc
                continue
            except OSError as exc:
                raise self._converted(exc) from exc
            view = view[sent:]
        if not blocked:
            await cancel_shielded_checkpoint()  # every send yields once, as anyio's does

    async def send_eof(self) -> None:
        try:
            self._socket.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise self._converted(exc) from exc

    def abort(self) -> None:
        if not self._closed:
            self._closed = True
            trio.lowlevel.notify_closing(self._socket)  # a task waiting on it gets ClosedResourceError
            self._socket.close()

    async def aclose(self) -> None:
        self.abort()
        await checkpoint()

    def _check_open(self) -> None:
        if self._closed:
            raise anyio.ClosedResourceError

    def _converted(self, exc: OSError) -> Exception:
        if self._closed or exc.errno in _CLOSED_ERRNOS:
            return anyio.ClosedResourceError()
        return anyio.BrokenResourceError(exc)


def trio_stream_opener() -> Callable[[socket.socket], Awaitable[AbortableSocketStream]]:
    """What opens a server's connections as streams on the running Trio loop: their turns after
    each answer are taken in order, one `Turns` for the whole server."""
    turns = Turns()

    async def open_trio_stream(sock: socket.socket) -> AbortableSocketStream:
        """A connected, non-blocking socket as a stream."""
        return TrioSocketStream(sock, turns)

    return open_trio_stream
