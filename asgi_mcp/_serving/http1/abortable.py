"""The built-in server's socket streams: anyio's `SocketStream`, and an `abort` for its write timeout."""

from __future__ import annotations

import abc
import socket

import anyio.abc

__all__ = ["AbortableSocketStream"]


class AbortableSocketStream(anyio.abc.SocketStream):
    @property
    def raw_socket(self) -> socket.socket:
        """The connected socket itself, for writes that skip the stream (`HttpConnection.write`);
        `extra(SocketAttribute.raw_socket)` builds every attribute's getter to return it."""
        return self._raw_socket

    @abc.abstractmethod
    def abort(self) -> None:
        """Close at once, from any task: a send or receive waiting on the socket fails
        (`ClosedResourceError`). Unlike cancelling, this also ends a send made under a shield."""
