"""The built-in server's byte stream: the socket's own calls, with the event loop's waits only when needed.

anyio's streams go through the loop for every call: on Trio, Trio's socket wrapper tries each call
inside an async context manager (a cancellation check, the call, a shielded checkpoint); on asyncio,
a transport reads ahead and is paused and resumed around each `receive`. Here the calls are the
socket's own, and each backend (`trio_stream.py`, `asyncio_stream.py`) supplies only the waits: a
yield, and a wait for readability or writability.

`receive_next` (the read for a connection that has just answered, whose socket was empty then) first
lets the other tasks run, taking its turn in order with the server's other connections: under load
its peer has sent the next request by the time it runs again, so that is read without a readiness
wait (which costs an `epoll_ctl` call and a trip through the I/O manager); only a socket still empty
waits. A read the loop made for us instead would wait for the loop's next poll: a request that came
just after one poll waited for the next one and was then served last, two rounds after its answer
(on uvloop, a p99 twice the median at 32 connections). `receive` tries the socket first and, when
data is already there, still yields once, so a client that keeps its connection full cannot starve
the others; but not on the stream's first read, whose task has only just had its turn to start: a
connection carrying one request is then served in one step, instead of waiting beside each
connection accepted with it. `send` returns once the kernel has taken every byte. `abort` closes at
once, from any task: a send or receive waiting on the socket fails (`ClosedResourceError`), under a
shield too. Errors are anyio's (`EndOfStream`, `BrokenResourceError`, `ClosedResourceError`).
"""

from __future__ import annotations

import abc
import errno
import socket
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc

__all__ = ["DirectSocketStream"]

# Errors that mean the socket was closed under us rather than that the peer went away.
_CLOSED_ERRNOS = frozenset((errno.EBADF, errno.ENOTSOCK))


class DirectSocketStream(anyio.abc.SocketStream):
    def __init__(self, sock: socket.socket, turn: Callable[[], Awaitable[None]]) -> None:
        self._socket = sock  # non-blocking (`prepare_accepted`)
        self._turn = turn  # the server's: the connections' turns after an answer, in order
        self._closed = False
        self._started = False  # a receive has returned

    @property
    def raw_socket(self) -> socket.socket:
        """The connected socket itself, for writes that skip the stream (`HttpConnection.write`);
        `extra(SocketAttribute.raw_socket)` builds every attribute's getter to return it."""
        return self._socket

    @property
    def _raw_socket(self) -> socket.socket:
        return self._socket

    async def receive(self, max_bytes: int = 65536) -> bytes:
        self._check_open()
        try:
            data = self._recv_now(max_bytes)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            await self._checkpoint()  # an end or an error is a checkpoint too, as with data
            raise
        if data is None:
            data = await self._read_when_ready(max_bytes)
        elif self._started:
            await self._checkpoint()  # data was waiting: still a turn for the others (and a cancellation point)
        self._started = True
        return data

    async def receive_next(self, max_bytes: int = 65536) -> bytes:
        """Read what the peer sends next, for a connection that has just answered: its socket was
        empty then, so yield first and try the socket after the others' turns; wait if still empty."""
        if self._closed:
            raise anyio.ClosedResourceError
        await self._turn()
        # `_recv_now`, inline on the path every kept-alive request takes
        try:
            data = self._socket.recv(max_bytes)  # under load, there by now: no wait
        except BlockingIOError:
            return await self._read_when_ready(max_bytes)
        except OSError as exc:
            raise self._converted(exc) from exc
        if not data:
            raise anyio.EndOfStream
        return data

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

    async def send(self, item: bytes) -> None:
        self._check_open()
        await self._before_send()
        sock = self._socket
        view = memoryview(item)
        blocked = False
        while view:
            try:
                sent = sock.send(view)
            except BlockingIOError:
                blocked = True
                await self._wait_writable()
                continue
            except OSError as exc:
                raise self._converted(exc) from exc
            view = view[sent:]
        if not blocked:
            await self._after_send()  # every send yields once, as anyio's does

    async def send_eof(self) -> None:
        try:
            self._socket.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise self._converted(exc) from exc

    def abort(self) -> None:
        """Close at once, from any task: a send or receive waiting on the socket fails
        (`ClosedResourceError`). Unlike cancelling, this also ends a send made under a shield."""
        if not self._closed:
            self._closed = True
            self._wake_waiters()
            self._socket.close()

    async def aclose(self) -> None:
        self.abort()
        await self._checkpoint()

    def _check_open(self) -> None:
        if self._closed:
            raise anyio.ClosedResourceError

    def _converted(self, exc: OSError) -> Exception:
        if self._closed or exc.errno in _CLOSED_ERRNOS:
            return anyio.ClosedResourceError()
        return anyio.BrokenResourceError(exc)

    # -- what each backend supplies --------------------------------------------------------------

    @abc.abstractmethod
    async def _checkpoint(self) -> None:
        """A yield: a turn for the other tasks, and a cancellation point."""

    @abc.abstractmethod
    async def _wait_readable(self) -> None:
        """Until the socket is readable; `ClosedResourceError` if the stream is aborted meanwhile."""

    @abc.abstractmethod
    async def _wait_writable(self) -> None:
        """Until the socket is writable; `ClosedResourceError` if the stream is aborted meanwhile."""

    @abc.abstractmethod
    async def _before_send(self) -> None:
        """A send's cancellation check, before anything is written."""

    @abc.abstractmethod
    async def _after_send(self) -> None:
        """A send's yield, once all of it is written."""

    @abc.abstractmethod
    def _wake_waiters(self) -> None:
        """Wake whatever waits on the socket, before it is closed (`abort`)."""
