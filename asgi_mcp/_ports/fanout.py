"""Bounded in-process fan-out on anyio memory streams, for the in-memory bus and tenant store.

Delivery never waits: each subscriber has a buffer of its own, and a subscriber whose buffer is full
is cut (its feed ends with `SubscriptionCut` once it has read what it holds), so a reader that stopped
costs at most its buffer, never the worker's memory, and never slows the writer or the other readers.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Hashable
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._core.errors import SubscriptionCut

__all__: list[str] = []

T = TypeVar("T")


class _Slot(Generic[T]):
    __slots__ = ("cut", "send")

    def __init__(self, send: MemoryObjectSendStream[T]) -> None:
        self.send = send
        self.cut = False


class Feed(Generic[T]):
    """What one subscriber reads: items in delivery order; ends when the fan-out closes, raises when cut."""

    __slots__ = ("_receive", "_slot")

    def __init__(self, receive: MemoryObjectReceiveStream[T], slot: _Slot[T]) -> None:
        self._receive = receive
        self._slot = slot

    def __aiter__(self) -> Feed[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self._receive.receive()
        except anyio.EndOfStream:
            if self._slot.cut:
                raise SubscriptionCut("the subscriber fell behind its buffer and was cut") from None
            raise StopAsyncIteration from None


class Fanout(Generic[T]):
    """Subscribers by key (a channel); `deliver` hands an item to each subscriber of its key."""

    __slots__ = ("_max_buffered", "_slots")

    def __init__(self, max_buffered: int) -> None:
        if max_buffered < 1:
            raise ValueError("max_buffered must be positive")
        self._max_buffered = max_buffered
        self._slots: dict[Hashable, set[_Slot[T]]] = {}

    @asynccontextmanager
    async def subscribe(self, key: Hashable) -> AsyncGenerator[Feed[T], None]:
        """Subscribed once entered: every item delivered from then on, until exit, reaches the feed."""
        send, receive = anyio.create_memory_object_stream[T](self._max_buffered)
        slot = _Slot(send)
        self._slots.setdefault(key, set()).add(slot)
        try:
            yield Feed(receive, slot)
        finally:
            self._drop(key, slot)
            receive.close()

    def deliver(self, key: Hashable, item: T) -> int:
        """Hand `item` to every subscriber of `key` without waiting; returns how many took it."""
        slots = self._slots.get(key)
        if not slots:
            return 0
        taken = 0
        for slot in list(slots):
            if self._offer(key, slot, item):
                taken += 1
        return taken

    def _offer(self, key: Hashable, slot: _Slot[T], item: T) -> bool:
        try:
            slot.send.send_nowait(item)
        except anyio.WouldBlock:
            slot.cut = True
            self._drop(key, slot)
            return False
        except anyio.BrokenResourceError:  # its reader left; its exit drops the slot too
            self._drop(key, slot)
            return False
        return True

    def subscribers(self, key: Hashable) -> int:
        return len(self._slots.get(key, ()))

    def close(self) -> None:
        """End every feed (after what it holds): shutdown, not a cut."""
        for key, slots in list(self._slots.items()):
            for slot in list(slots):
                self._drop(key, slot)

    def _drop(self, key: Hashable, slot: _Slot[T]) -> None:
        slot.send.close()
        slots = self._slots.get(key)
        if slots is not None:
            slots.discard(slot)
            if not slots:
                del self._slots[key]
