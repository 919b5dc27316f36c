"""`subscriptions/listen` across a fleet: an event a tenant's server publishes on one worker reaches
that tenant's listen streams on every worker, once each.

The SDK serves `subscriptions/listen` from the server's subscription bus, in process. When this
worker builds a tenant's server (`TenantServers`, or the runtime's single server), `bridge` wraps
the publish of its bus (the SDK's `InMemorySubscriptionBus`; a bus of another kind is the
application's own fan-out and is left alone): each event is delivered here as before, then relayed
on the tenant's `listen` channel of the fleet's message bus. A follower per tenant hands what other
workers relayed to the local listeners through the bus's original publish.

- Tenants stay apart: one bus channel per tenant, and every message names its tenant; a message
  whose tenant is not the channel's is dropped (`_ports.listen_events`).
- Once per listener: a worker drops its own relayed events (they carry its id), delivered locally
  already.
- Bounded: the follower's feed is the message bus's bounded one (a follower that falls behind is
  cut and subscribes again), and it hands events on without waiting, so a listener that stopped
  reading is ended by the SDK's listen handler at its buffer's cap, never the worker's memory.
- Nothing here runs per request: a tenant's channel is followed from the moment its server is
  built on this worker (without waiting for Redis: building a server never needs it), and a publish
  costs one bus publish. A `subscriptions/listen` request alone waits, once per tenant and worker,
  for that first subscription (`listening`), so an event published once the stream is acknowledged
  reaches it.

Pub/sub is at most once (a worker cut off from Redis misses what was published meanwhile): listen
streams have no replay either, and clients refetch after re-listening.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import anyio
import anyio.abc
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.shared.subscriptions import ServerEvent

from .._core.errors import StoreUnavailable, SubscriptionCut
from .._ports.listen_events import LISTEN_CHANNEL, decode_event, encode_event
from .._ports.message_bus import BusMessage, MessageBus
from .isolation import listen_bus

__all__: list[str] = []

logger = logging.getLogger("asgi_mcp.fleet")

RESUBSCRIBE_BACKOFF: Final = (0.1, 0.25, 0.5, 1.0)

Publish = Callable[[ServerEvent], Awaitable[None]]


class _RelayedPublish:
    """What a bridged bus's `publish` becomes: the bus's own delivery, then the relay to the fleet.

    Kept on the bus (idempotent: a server bridged again, in a later run or generation, is not
    relayed twice); `relay` is the running relay, None once it stopped.
    """

    __slots__ = ("local", "relay", "tenant_id")

    def __init__(self, local: Publish, tenant_id: str | None) -> None:
        self.local = local
        self.tenant_id = tenant_id
        self.relay: ListenRelay | None = None

    async def __call__(self, event: ServerEvent) -> None:
        await self.local(event)
        relay = self.relay
        if relay is not None:
            await relay.publish(self.tenant_id, event)


class _Followed:
    """A tenant's channel as this worker follows it."""

    __slots__ = ("local", "scope", "settled")

    def __init__(self, local: Publish) -> None:
        self.local = local  # the newest bridged bus's own delivery
        self.settled = anyio.Event()  # the first subscription holds, or failed (then it is retried)
        self.scope = anyio.CancelScope()


class ListenRelay:
    """This worker's part in the fleet's `subscriptions/listen`.

    Args:
        bus: the fleet's message bus.
        worker_id: this worker's id in the fleet (on every message it publishes).
        timeout: how long a listen request waits for its tenant's channel to be followed.
    """

    def __init__(self, bus: MessageBus, *, worker_id: str, timeout: float) -> None:
        self._bus = bus
        self.worker_id = worker_id
        self._timeout = timeout
        self._tg: anyio.abc.TaskGroup | None = None
        self._scope = anyio.CancelScope()
        self._followed: dict[str | None, _Followed] = {}
        self._bridged: dict[str | None, _RelayedPublish] = {}  # the newest server's, per tenant
        self._degraded = False

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The followers' tasks, until `stop`."""
        with self._scope:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                task_status.started()
                await anyio.sleep_forever()

    def stop(self) -> None:
        for relayed in self._bridged.values():
            relayed.relay = None  # the servers outlive this run: their events stay local
        self._bridged.clear()
        self._followed.clear()
        self._scope.cancel()

    def bridge(self, tenant_id: str | None, server: Any) -> None:
        """Relay what `server`'s subscription bus publishes, and follow the tenant's channel."""
        bus: Any = listen_bus(server)
        if not isinstance(bus, InMemorySubscriptionBus):
            if bus is not None:
                logger.info("a server's subscription bus is its own (not in-process): not relayed by the fleet")
            return
        relayed = bus.publish if isinstance(bus.publish, _RelayedPublish) else _RelayedPublish(bus.publish, tenant_id)
        # A bus serves one tenant at a time (`BusOwners`), but may serve another after a removal.
        relayed.tenant_id, relayed.relay = tenant_id, self
        bus.publish = relayed  # type: ignore[method-assign]  # pyright: ignore[reportAttributeAccessIssue]
        previous = self._bridged.get(tenant_id)
        if previous is not None and previous is not relayed:
            previous.relay = None  # a replaced server (token updated): what it still publishes stays here
        self._bridged[tenant_id] = relayed
        followed = self._followed.get(tenant_id)
        if followed is None:
            followed = self._followed[tenant_id] = _Followed(relayed.local)
            if self._tg is not None:
                self._tg.start_soon(self._follow, tenant_id, followed)
        followed.local = relayed.local

    async def listening(self, server: Any) -> None:
        """Before a listen stream of `server` starts: its tenant's channel is followed, or the first
        attempt failed (bounded by `timeout`); at once after the first time."""
        relayed: Any = getattr(listen_bus(server), "publish", None)
        if not isinstance(relayed, _RelayedPublish):
            return
        followed = self._followed.get(relayed.tenant_id)
        if followed is not None and not followed.settled.is_set():
            with anyio.move_on_after(self._timeout):
                await followed.settled.wait()

    def release(self, tenant_id: str | None) -> None:
        """The tenant is gone from this worker (its token removed): stop following its channel."""
        followed = self._followed.pop(tenant_id, None)
        if followed is not None:
            followed.scope.cancel()
        relayed = self._bridged.pop(tenant_id, None)
        if relayed is not None:
            relayed.relay = None

    async def publish(self, tenant_id: str | None, event: ServerEvent) -> None:
        """To the tenant's listeners on the other workers. A fleet that cannot be reached costs the
        publisher nothing but the bounded wait: the event was delivered here, and listen streams are
        at most once anyway."""
        try:
            await self._bus.publish(tenant_id, LISTEN_CHANNEL, encode_event(tenant_id, self.worker_id, event))
        except (StoreUnavailable, OSError, TimeoutError):
            if not self._degraded:
                self._degraded = True
                logger.warning("listen events are not reaching the other workers (the fleet's bus is unavailable)")
            return
        if self._degraded:
            self._degraded = False
            logger.warning("listen events reach the other workers again")

    async def _follow(self, tenant_id: str | None, followed: _Followed) -> None:
        """The tenant's channel, until released or stopped; subscribed again after a cut or an outage."""
        failures = 0
        with followed.scope:
            while True:
                try:
                    async with self._bus.subscribe(tenant_id, LISTEN_CHANNEL) as feed:
                        followed.settled.set()
                        failures = 0
                        async for message in feed:
                            await self._deliver(tenant_id, followed, message)
                    return  # the bus closed: shutdown
                except (SubscriptionCut, StoreUnavailable, OSError, TimeoutError) as error:
                    logger.warning("fleet listen channel lost (%s); subscribing again", type(error).__name__)
                except Exception:  # a bug here must not take the worker down: its own listeners go on
                    logger.exception("fleet listen channel failed; subscribing again")
                followed.settled.set()  # a listen stream waits no longer: it serves this worker's events
                await anyio.sleep(RESUBSCRIBE_BACKOFF[min(failures, len(RESUBSCRIBE_BACKOFF) - 1)])
                failures += 1

    async def _deliver(self, tenant_id: str | None, followed: _Followed, message: BusMessage) -> None:
        relayed = decode_event(message.payload)
        if relayed is None:
            logger.warning("dropped a malformed fleet listen event")
            return
        if relayed.tenant_id != tenant_id or message.tenant_id != tenant_id:
            logger.warning("dropped a fleet listen event addressed to another tenant")
            return
        if relayed.origin == self.worker_id:
            return  # published here, and delivered here already
        # The bus's own delivery: each listen stream takes it without waiting, or is ended at its cap.
        await followed.local(relayed.event)
