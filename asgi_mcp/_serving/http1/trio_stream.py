"""The built-in server's byte stream on Trio (`socket_stream.py`): Trio's waits, and turns in order.

Trio runs the tasks of one batch in either order, at random: the connections' turns after an answer
come from the server's own first-in-first-out queue instead (`turns.py`).
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

import anyio
import trio
from trio.lowlevel import cancel_shielded_checkpoint, checkpoint, checkpoint_if_cancelled, wait_readable, wait_writable

from .socket_stream import DirectSocketStream
from .turns import Turns

__all__ = ["TrioSocketStream", "trio_stream_opener"]


class TrioSocketStream(DirectSocketStream):
    async def _checkpoint(self) -> None:
        await checkpoint()

    async def _before_send(self) -> None:
        await checkpoint_if_cancelled()

    async def _after_send(self) -> None:
        # Shielded: a send that has written everything does not then raise as if it had not.
        await cancel_shielded_checkpoint()

    async def _wait_readable(self) -> None:
        try:
            await wait_readable(self._socket)
        except trio.ClosedResourceError as exc:
            raise anyio.ClosedResourceError from exc

    async def _wait_writable(self) -> None:
        try:
            await wait_writable(self._socket)
        except trio.ClosedResourceError as exc:
            raise anyio.ClosedResourceError from exc

    def _wake_waiters(self) -> None:
        trio.lowlevel.notify_closing(self._socket)  # a task waiting on it gets ClosedResourceError


def trio_stream_opener() -> Callable[[socket.socket], Awaitable[DirectSocketStream]]:
    """What opens a server's connections as streams on the running Trio loop: their turns after
    each answer are taken in order, one `Turns` for the whole server."""
    turns = Turns()

    async def open_trio_stream(sock: socket.socket) -> DirectSocketStream:
        """A connected, non-blocking socket as a stream, for the calling task (the connection's)."""
        return TrioSocketStream(sock, turns.taker())

    return open_trio_stream
