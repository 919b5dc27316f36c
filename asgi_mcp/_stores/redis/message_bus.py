"""`MessageBus` on Redis pub/sub: one subscribing connection per worker, fanned out in process.

Each (tenant, channel) is one Redis channel, `<prefix>:bus:["<tenant>","<channel>"]` (JSON, so no two
pairs share a name: "a:b"/"c" and "a"/"b:c", None and "" stay apart). A worker subscribes to a Redis
channel while at least one of its subscribers listens, and hands what arrives to them through the
bounded `Fanout`: a subscriber that falls behind is cut, never the worker's memory (coredis buffers
pub/sub messages without bound, so they are drained at once). Every message carries its tenant and
channel and is dropped on any mismatch with the Redis channel it came by.

Pub/sub is at-most-once: a worker disconnected from Redis misses what was published meanwhile
(coredis reconnects and resubscribes by itself, with backoff).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Final, cast

import anyio
import coredis
import coredis.exceptions

from ..._ports.fanout import Fanout
from ..._ports.message_bus import BusMessage
from .connection import DEFAULT_TIMEOUT, RedisConnection, require_prefix

__all__ = ["RedisMessageBus"]

logger = logging.getLogger("asgi_mcp.bus")

_WHAT: Final = "message bus"
Route = tuple[str | None, str]


class _Channel:
    """A Redis channel this worker listens to: its route, its local subscribers, whether SUBSCRIBE is acked."""

    __slots__ = ("ready", "route", "users")

    def __init__(self, route: Route) -> None:
        self.route = route
        self.users = 0
        self.ready = anyio.Event()


class RedisMessageBus:
    """A `MessageBus` every worker sharing the Redis takes part in (needs `asgi-mcp[redis]`).

    Args:
        redis: a URL or a `coredis.Redis` with `decode_responses=True`.
        prefix: the first part of every channel name.
        max_buffered: messages a subscriber may fall behind before it is cut.
        timeout: seconds a publish or subscribe may take before it fails as `StoreUnavailable` (503).

    Open it before use (`async with bus:`) in a task that outlives its subscribers.
    """

    def __init__(
        self,
        redis: str | coredis.Redis[str],
        *,
        prefix: str = "asgi_mcp",
        max_buffered: int = 1024,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        require_prefix("RedisMessageBus", prefix)
        self._fanout = Fanout[BusMessage](max_buffered)  # refuses max_buffered < 1
        self.connection = RedisConnection(redis, timeout=timeout)
        self._prefix = f"{prefix}:bus:"
        self._channels: dict[str, _Channel] = {}
        self._pubsub: Any = None
        self._stack: AsyncExitStack | None = None

    async def __aenter__(self) -> RedisMessageBus:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(self.connection)
            # coredis's subscriber reconnects in a task of its own, with no end to its retries, and
            # closing it stops only the connection of the moment: closed while Redis is down or
            # between two attempts, it would wait for ever. This scope, cancelled as it closes, ends
            # its retries too, so closing the bus is bounded whatever state Redis is in.
            closing = stack.enter_context(anyio.CancelScope())
            self._pubsub = await stack.enter_async_context(self.connection.client.pubsub())
            stack.callback(closing.cancel)
            reader = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(reader.cancel_scope.cancel)  # first on exit: the reader stops, then the rest closes
            stack.callback(self._fanout.close)
            reader.start_soon(self._read)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.__aexit__(*exc_info)

    def name(self, tenant_id: str | None, channel: str) -> str:
        """The Redis channel of a tenant's channel."""
        return self._prefix + json.dumps([tenant_id, channel], separators=(",", ":"), ensure_ascii=False)

    async def publish(self, tenant_id: str | None, channel: str, payload: str) -> None:
        envelope = json.dumps({"t": tenant_id, "c": channel, "p": payload}, separators=(",", ":"))
        with self.connection.guard(_WHAT):
            await self.connection.client.publish(self.name(tenant_id, channel), envelope)

    @asynccontextmanager
    async def subscribe(self, tenant_id: str | None, channel: str) -> AsyncGenerator[AsyncIterator[BusMessage], None]:
        route: Route = (tenant_id, channel)
        name = self.name(tenant_id, channel)
        async with self._fanout.subscribe(route) as feed:
            listening = self._channels.get(name)
            if listening is None:
                listening = self._channels[name] = _Channel(route)
            listening.users += 1
            try:
                if listening.users == 1:
                    try:
                        with self.connection.guard(_WHAT):
                            await self._pubsub.subscribe(name)
                    finally:
                        listening.ready.set()
                else:
                    await listening.ready.wait()
                yield feed
            finally:
                listening.users -= 1
                if listening.users == 0 and self._channels.get(name) is listening:
                    del self._channels[name]
                    # Shielded (the subscriber may leave by cancellation), bounded; a lost connection
                    # unsubscribed it already.
                    with (
                        anyio.CancelScope(shield=True),
                        anyio.move_on_after(self.connection.timeout),
                        contextlib.suppress(coredis.exceptions.ConnectionError, OSError),
                    ):
                        await self._pubsub.unsubscribe(name)

    async def _read(self) -> None:
        while True:
            message = await self._pubsub.get_message(ignore_subscribe_messages=True)
            if message is None or message["type"] != "message":
                continue
            listening = self._channels.get(_text(message["channel"]))
            if listening is None:
                continue  # arrived after its last local subscriber left
            found = _open(_text(message["data"]))
            if found is None or (found.tenant_id, found.channel) != listening.route:
                logger.warning("dropped a bus message addressed to another tenant or channel")
                continue
            self._fanout.deliver(listening.route, found)

    def subscribers(self, tenant_id: str | None, channel: str) -> int:
        """Subscribers of the tenant's channel in this process."""
        return self._fanout.subscribers((tenant_id, channel))


def _open(envelope: str) -> BusMessage | None:
    try:
        fields = cast("dict[str, Any]", json.loads(envelope))
        tenant_id, channel, payload = fields["t"], fields["c"], fields["p"]
    except (ValueError, KeyError, TypeError):
        return None
    if not (tenant_id is None or isinstance(tenant_id, str)) or not isinstance(channel, str):
        return None
    if not isinstance(payload, str):
        return None
    return BusMessage(tenant_id, channel, payload)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
