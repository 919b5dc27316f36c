"""The message bus port: messages between sessions and workers, one set of channels per tenant.

A message is JSON text with its tenant and channel on it. A subscriber names its tenant; a message
that arrives carrying another tenant (or channel) is dropped, whatever the transport did: a shared
backend that maps (tenant, channel) onto one name space cannot make one tenant read another's.
Buffers are bounded per subscriber: one that falls behind is cut (`SubscriptionCut`), never the
worker's memory and never the publisher.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

import anyio.lowlevel

from .fanout import Fanout, Feed

__all__ = ["BusMessage", "InMemoryMessageBus", "MessageBus"]

logger = logging.getLogger("asgi_mcp.bus")


@dataclass(frozen=True, slots=True)
class BusMessage:
    """One published message: `payload` is JSON text (written to a stream as it is, parsed if needed)."""

    tenant_id: str | None
    channel: str
    payload: str


class MessageBus(Protocol):
    """Publish and subscribe by (tenant, channel). `tenant_id` None is an app without tenants."""

    async def publish(self, tenant_id: str | None, channel: str, payload: str) -> None:
        """Send `payload` to every current subscriber of the tenant's channel, on every worker; never waits
        for a subscriber to read."""
        ...

    def subscribe(self, tenant_id: str | None, channel: str) -> AbstractAsyncContextManager[AsyncIterator[BusMessage]]:
        """Once entered, every message published to the tenant's channel arrives, in publication order per
        publisher; only messages carrying this tenant and channel are yielded. Raises `SubscriptionCut` from
        the iterator when the subscriber fell more than its buffer behind."""
        ...


class InMemoryMessageBus:
    """The process-local `MessageBus`, on anyio memory streams.

    Args:
        max_buffered: messages a subscriber may fall behind before it is cut.
    """

    def __init__(self, *, max_buffered: int = 1024) -> None:
        self._fanout = Fanout[BusMessage](max_buffered)

    async def publish(self, tenant_id: str | None, channel: str, payload: str) -> None:
        self._fanout.deliver((tenant_id, channel), BusMessage(tenant_id, channel, payload))
        # A checkpoint, as every async call should be: a burst of publishes lets subscribers read.
        await anyio.lowlevel.checkpoint()

    @asynccontextmanager
    async def subscribe(self, tenant_id: str | None, channel: str) -> AsyncGenerator[AsyncIterator[BusMessage], None]:
        async with self._fanout.subscribe((tenant_id, channel)) as feed:
            yield _TenantFeed(feed, tenant_id, channel)

    def subscribers(self, tenant_id: str | None, channel: str) -> int:
        """Subscribers of the tenant's channel in this process."""
        return self._fanout.subscribers((tenant_id, channel))

    def close(self) -> None:
        """End every subscription (after what it holds): for shutdown."""
        self._fanout.close()


class _TenantFeed:
    """A subscriber's messages, each checked against the tenant and channel it subscribed to."""

    __slots__ = ("_channel", "_feed", "_tenant_id")

    def __init__(self, feed: Feed[BusMessage], tenant_id: str | None, channel: str) -> None:
        self._feed = feed
        self._tenant_id = tenant_id
        self._channel = channel

    def __aiter__(self) -> _TenantFeed:
        return self

    async def __anext__(self) -> BusMessage:
        while True:
            message = await self._feed.__anext__()
            if message.tenant_id == self._tenant_id and message.channel == self._channel:
                return message
            logger.warning("dropped a bus message addressed to another tenant or channel")
