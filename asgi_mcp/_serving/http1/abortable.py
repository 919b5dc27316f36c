"""The built-in server's socket streams: anyio's `SocketStream`, and an `abort` for its write timeout."""

from __future__ import annotations

import abc

import anyio.abc

__all__ = ["AbortableSocketStream"]


class AbortableSocketStream(anyio.abc.SocketStream):
    @abc.abstractmethod
    def abort(self) -> None:
        """Close at once, from any task: a send or receive waiting on the socket fails
        (`ClosedResourceError`). Unlike cancelling, this also ends a send made under a shield."""
