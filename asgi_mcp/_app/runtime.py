"""`Runtime`: what exists only while an `McpApp` runs, built from its `AppConfig`.

One per lifespan: the task group, the served server's host, the legacy session table, both era
endpoints, the reaper that ends idle and drained sessions, keep-alive and the watch over long
modern exchanges. The options it needs per request are copied into plain attributes here, once.
`start` brings it up inside the lifespan's task group; `shutdown` ends everything (idempotent).
`run_lifespan_protocol` drives a run from the ASGI `lifespan` messages a server sends.
"""

from __future__ import annotations

import gc
import logging
import time
import weakref
from collections.abc import AsyncGenerator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, Final, cast

import anyio
import anyio.abc

from .._auth.principal import Principal
from .._core.asgi import Receive, Send
from .._core.session_table import SessionEntry, SessionTable
from .._io.loop import Loop
from .._io.response import KeepAlive
from .._io.watch import LateWatch
from .._kernel.hosting import ServerHost
from .._legacy.endpoint import LegacyEndpoint, LegacySession
from .._legacy.fleet import SessionFleet
from .._modern.endpoint import ModernEndpoint
from .._ops.lifecycle import EventHub, SessionCreated, SessionEnded
from .._ops.telemetry import TENANT_ATTRIBUTE, Metrics
from .._ports.replay import EventLog
from .._tenancy.listen_relay import ListenRelay
from .._tenancy.mirror import TenantMirror
from .._tenancy.servers import TenantServers
from .config import AppConfig, touch_interval
from .fleet_health import Heartbeat, heartbeat_for
from .observers import ModernObservers, legacy_client, tool_observer
from .operations import Operations

__all__ = ["Runtime", "run_lifespan_protocol", "stores_opened"]

logger = logging.getLogger("asgi_mcp")

# How soon a modern exchange still running gets a watcher (a leaving client cancels it within two).
WATCH_PERIOD: Final = 0.05
# The reaper's sleep when no session has a deadline.
REAPER_IDLE_WAKE: Final = 60.0


class Runtime:
    """The task group, the session table, the endpoints, and the services that keep them tidy."""

    def __init__(
        self,
        config: AppConfig,
        task_group: anyio.abc.TaskGroup,
        events: EventHub,
        metrics: Metrics,
        tenant_servers: TenantServers | None,
        operations: Operations | None = None,
        *,
        app: object = None,
    ) -> None:
        """`app`: the ASGI app this runtime answers for (`McpApp`)."""
        self.task_group = task_group
        self.operations = operations
        self.events = events
        self.metrics = metrics
        self.tenant_servers = tenant_servers
        self.max_body_size = config.max_body_size
        self.shutdown_timeout = config.shutdown_timeout
        self.gc_freeze = config.gc_freeze
        self.closing = False
        self.started = False  # startup completed (server lifespan entered): ready for traffic
        self.started_at = time.time()
        self.wake_reaper = anyio.Event()
        self.reaper_wakes_at = float("inf")
        self.loop = Loop.current()
        self.keepalive = KeepAlive(config.keepalive_interval, self.loop.clock)
        self.watch = LateWatch(min(WATCH_PERIOD, config.keepalive_interval / 4))
        self.services = anyio.CancelScope()  # keep-alive and the watch: see `_run_services`
        # A fresh host per run: a server's lifespan is entered once per host.
        self.host = ServerHost(config.server) if config.server is not None else None
        # The caller of a single served server with no authentication; verified callers reach its host too.
        self.anonymous = Principal(owner="", tenant_id=None, host=self.get_host)
        self.table: SessionTable[LegacySession] = SessionTable(
            max_sessions=config.max_sessions,
            idle_timeout=config.session_idle_timeout,
            max_per_tenant=config.max_sessions_per_tenant,
        )
        self.legacy = LegacyEndpoint(
            table=self.table,
            task_group=task_group,
            json_response=config.json_response,
            events=EventLog(config.event_store) if config.event_store is not None else None,
            retry_ms=config.retry_interval,
            keepalive=self.keepalive,
            loop=self.loop,
            observer_for=lambda entry: tool_observer(
                events, entry.tenant_id, entry.session_id, operations, legacy_client(weakref.ref(entry.value))
            ),
            on_created=self._session_created,
            on_ended=self._session_ended,
            wake=self.wake,
            app=app,
        )
        self.mirror, self.fleet = self._shared(config)
        self.heartbeat: Heartbeat | None = heartbeat_for(config.fleet, self.started_at, self.table.per_tenant)
        self.tool_observers = ModernObservers(events, operations)
        self.modern = ModernEndpoint(
            json_response=config.json_response,
            keepalive=config.keepalive_interval,
            tool_schema_ttl=config.tool_schema_ttl,
            loop=self.loop,
            watch=self.watch,
            before_listen=self.relay.listening if self.relay is not None else None,
        )

    def _shared(self, config: AppConfig) -> tuple[TenantMirror | None, SessionFleet | None]:
        """What the workers of a fleet share: the tenant registry's mirror, the legacy sessions."""
        self.relay: ListenRelay | None = None  # and `subscriptions/listen` events
        tenants = config.tenants
        store = tenants.shared_store if tenants is not None else None
        mirror = TenantMirror(tenants, store) if tenants is not None and store is not None else None
        if config.fleet is None:
            return mirror, None
        fleet = self.legacy.fleet = SessionFleet(
            config.fleet,
            table=self.table,
            end_session=self.legacy.end_session,
            touch_interval=touch_interval(config.session_idle_timeout),
        )
        self.relay = ListenRelay(config.fleet.bus, worker_id=fleet.worker_id, timeout=fleet.timeout)
        return mirror, fleet

    async def get_host(self) -> ServerHost:
        assert self.host is not None
        return self.host

    async def start(self) -> None:
        """Bring the run up: event delivery, the server's lifespan, the reaper, keep-alive, the watch."""
        tg = self.task_group
        await tg.start(self.events.run)
        if self.tenant_servers is not None:
            self.tenant_servers.attach(tg, self.legacy)
        if self.host is not None:
            await self.host.start(tg)
        if self.fleet is not None:
            await tg.start(self.fleet.run)
        if self.relay is not None:
            await self._relay_listen_events(self.relay)
        if self.mirror is not None:
            await tg.start(self.mirror.run)
        if self.heartbeat is not None:
            await tg.start(self.heartbeat.run)
        tg.start_soon(self.reap_forever)
        if self.operations is not None:
            self.operations.attach(self.legacy.end_session)
            tg.start_soon(self.operations.expire_forever)
        tg.start_soon(self._run_services)
        self.started = True
        if self.gc_freeze:
            gc.freeze()

    def shutdown(self) -> None:
        """End every session and stream, stop the servers; all still running gets `shutdown_timeout`."""
        if self.closing:
            return
        self.closing = True
        self.services.cancel()
        self.legacy.end_all("shutdown")
        if self.fleet is not None:
            self.fleet.stop()
        if self.relay is not None:
            self.relay.stop()
        if self.mirror is not None:
            self.mirror.stop()
        if self.heartbeat is not None:
            self.heartbeat.stop()  # its record leaves the roster at once
        if self.operations is not None:
            self.operations.detach()
        if self.tenant_servers is not None:
            self.tenant_servers.detach()
        if self.host is not None:
            self.host.stop()
        # Everything still running gets `shutdown_timeout` to finish, then is cancelled.
        self.task_group.cancel_scope.deadline = anyio.current_time() + self.shutdown_timeout
        self.wake()
        # Listeners get the events queued so far (session_ended of every session above), then stop.
        self.events.close()

    async def _relay_listen_events(self, relay: ListenRelay) -> None:
        """`subscriptions/listen` events reach the tenant's listeners on every worker of the fleet."""
        await self.task_group.start(relay.run)
        if self.tenant_servers is not None:
            self.tenant_servers.relay = relay
        if self.host is not None:
            relay.bridge(None, self.host.server)

    async def _run_services(self) -> None:
        # Under a scope of the runtime's own: a shutdown that comes before keep-alive and the watch
        # have begun (when their own `stop` finds nothing to cancel yet) still ends them.
        with self.services:
            async with anyio.create_task_group() as services:
                services.start_soon(self.keepalive.run, self.task_group)
                services.start_soon(self.watch.run)

    def _session_created(self, entry: SessionEntry[LegacySession]) -> None:
        if self.operations is not None:
            self.operations.session_opened(entry.session_id)  # bound to the token that opened it
        self.events.emit(
            SessionCreated(
                session_id=entry.session_id,
                tenant_id=entry.tenant_id,
                server_name=entry.value.host.name,
                protocol_version=entry.value.protocol_version,
                created_at=time.time(),
            )
        )

    def _session_ended(self, entry: SessionEntry[LegacySession], reason: str) -> None:
        if self.operations is not None:
            self.operations.session_ended(entry.session_id)
        duration = anyio.current_time() - entry.created_at
        self.events.emit(
            SessionEnded(
                session_id=entry.session_id,
                tenant_id=entry.tenant_id,
                server_name=entry.value.host.name,
                reason=reason,
                duration=duration,
                ended_at=time.time(),
            )
        )
        attributes = {TENANT_ATTRIBUTE: entry.tenant_id} if entry.tenant_id is not None else {}
        self.metrics.session_duration.record(duration, attributes)

    def wake(self, deadline: float | None = None) -> None:
        """Wake the reaper, unless `deadline` is no earlier than the moment it wakes anyway."""
        if deadline is None or deadline < self.reaper_wakes_at:
            self.wake_reaper.set()

    async def reap_forever(self) -> None:
        """End idle and drained sessions when their deadline passes; sleeps until the earliest one."""
        while not self.closing:
            deadline = self.table.next_deadline()
            now = anyio.current_time()
            self.reaper_wakes_at = now + REAPER_IDLE_WAKE if deadline is None else deadline
            with anyio.move_on_after(max(0.0, self.reaper_wakes_at - now)):
                await self.wake_reaper.wait()
            self.wake_reaper = anyio.Event()
            self.legacy.reap(anyio.current_time())


@asynccontextmanager
async def stores_opened(config: AppConfig) -> AsyncGenerator[None]:
    """The stores with a lifecycle (a Redis client's pool), opened by the lifespan's task, which
    outlives every request, and closed only once every session has ended."""
    fleet = config.fleet
    candidates: list[object] = [config.event_store, config.tenants.shared_store if config.tenants is not None else None]
    candidates += [fleet.directory, fleet.bus, fleet.roster, fleet.session_slots] if fleet is not None else []
    candidates.append(config.rate_limits.store if config.rate_limits is not None else None)
    unique: dict[int, AbstractAsyncContextManager[Any]] = {}
    for store in candidates:
        if isinstance(store, AbstractAsyncContextManager):
            opened = cast(AbstractAsyncContextManager[Any], store)
            unique[id(opened)] = opened
    async with AsyncExitStack() as stack:
        for opened in unique.values():
            await stack.enter_async_context(opened)
        yield


async def run_lifespan_protocol(
    run: Callable[[], AbstractAsyncContextManager[Any]], receive: Receive, send: Send
) -> None:
    """The ASGI `lifespan` protocol: enter `run()` on startup, leave it on shutdown."""
    async with AsyncExitStack() as stack:
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        try:
            await stack.enter_async_context(run())
        except Exception as exc:
            logger.exception("asgi_mcp startup failed")
            # Servers print this message; the run's task group wraps the cause in an exception
            # group whose own text ("unhandled errors in a TaskGroup") says nothing.
            await send({"type": "lifespan.startup.failed", "message": str(_sole_cause(exc))})
            return
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
    await send({"type": "lifespan.shutdown.complete"})


def _sole_cause(exc: BaseException) -> BaseException:
    """The exception inside (nested) one-member exception groups; `exc` itself otherwise."""
    while True:
        members = cast("tuple[BaseException, ...] | None", getattr(exc, "exceptions", None))
        if not isinstance(members, tuple) or len(members) != 1:
            return exc
        exc = members[0]
