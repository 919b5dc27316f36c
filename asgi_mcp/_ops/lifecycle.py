"""Lifecycle events: typed immutable payloads and a hub that delivers them off the request path.

`emit` never blocks and never raises: it appends to each listener's queue. Each listener has its
own worker task (started with the app), so a slow async listener delays only its own events, in
order, and a failing one is logged and skipped. Queues are bounded; when a listener falls that far
behind, its oldest events are dropped and counted. Sync listeners run on the event loop: keep them
quick, or make them async.

Payloads never carry a bearer token: tenants appear by their non-secret `tenant_id`.
"""

from __future__ import annotations

import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias, final

import anyio
import anyio.abc

__all__ = [
    "Audit",
    "Event",
    "EventName",
    "ServerRegistered",
    "ServerRemoved",
    "ServerUpdated",
    "SessionCreated",
    "SessionEnded",
    "Started",
    "Stopped",
    "TokenAdded",
    "TokenExpired",
    "TokenRemoved",
    "TokenRotated",
    "TokenUpdated",
    "ToolCalled",
    "TransportError",
]

logger = logging.getLogger("asgi_mcp.events")


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class Started:
    url: str
    host: str
    port: int
    endpoint: str
    started_at: float
    name: Literal["started"] = "started"


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class Stopped:
    stopped_at: float
    uptime: float
    name: Literal["stopped"] = "stopped"


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class TokenAdded:
    tenant_id: str
    name: Literal["token_added"] = "token_added"


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class TokenRemoved:
    tenant_id: str
    policy: str
    name: Literal["token_removed"] = "token_removed"


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class TokenUpdated:
    tenant_id: str
    policy: str
    name: Literal["token_updated"] = "token_updated"


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class TokenRotated:
    """A tenant got a new token; the old one works `grace` seconds more."""

    tenant_id: str
    grace: float
    name: Literal["token_rotated"] = "token_rotated"


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class TokenExpired:
    """A token stopped working by time: its `not_after` (`reason="expired"`), a rotation's grace
    (`"rotated"`), or a verified token's own expiry (`"verified_expiry"`, `tenant_id` None)."""

    tenant_id: str | None
    reason: str
    name: Literal["token_expired"] = "token_expired"


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class Audit:
    """One audit record: a `tools/call` (any outcome) or a refused request.

    `outcome`: `ok`, `tool_error` (the tool reported an error), `error` (a JSON-RPC error),
    `refused` (the transport refused the request: `status` and `reason` say why) or
    `rate_limited`. `arguments` and `result` are None unless the operator opted in
    (`McpApp(audit=AuditPolicy(...))`), and then what its redaction hook returned.
    """

    time: float
    tenant_id: str | None
    session_id: str | None
    client_name: str | None
    client_version: str | None
    method: str | None
    tool: str | None
    outcome: str
    duration: float
    status: int | None = None
    reason: str | None = None
    arguments: Any = None
    result: Any = None
    name: Literal["audit"] = "audit"


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class ServerRegistered:
    tenant_id: str
    server_name: str
    server_version: str | None
    registered_at: float
    name: Literal["server_registered"] = "server_registered"


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class ServerRemoved:
    tenant_id: str
    server_name: str
    had_active_sessions: bool
    active_sessions: int
    removed_at: float
    name: Literal["server_removed"] = "server_removed"


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class ServerUpdated:
    tenant_id: str
    old_server_name: str | None
    new_server_name: str | None
    updated_at: float
    name: Literal["server_updated"] = "server_updated"


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class SessionCreated:
    session_id: str
    tenant_id: str | None
    server_name: str
    protocol_version: str
    created_at: float
    name: Literal["session_created"] = "session_created"


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class SessionEnded:
    session_id: str
    tenant_id: str | None
    server_name: str
    reason: str
    duration: float
    ended_at: float
    name: Literal["session_ended"] = "session_ended"


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCalled:
    tool_name: str
    tenant_id: str | None
    session_id: str | None
    duration: float
    success: bool
    error: str | None = None
    name: Literal["tool_called"] = "tool_called"


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class TransportError:
    tenant_id: str | None
    session_id: str | None
    error: str
    name: Literal["transport_error"] = "transport_error"


Event: TypeAlias = (
    Started
    | Stopped
    | TokenAdded
    | TokenRemoved
    | TokenUpdated
    | TokenRotated
    | TokenExpired
    | Audit
    | ServerRegistered
    | ServerRemoved
    | ServerUpdated
    | SessionCreated
    | SessionEnded
    | ToolCalled
    | TransportError
)
EventName = Literal[
    "started",
    "stopped",
    "token_added",
    "token_removed",
    "token_updated",
    "token_rotated",
    "token_expired",
    "audit",
    "server_registered",
    "server_removed",
    "server_updated",
    "session_created",
    "session_ended",
    "tool_called",
    "transport_error",
]
EVENT_NAMES: Final[frozenset[str]] = frozenset(EventName.__args__)  # type: ignore[attr-defined]

Listener = Callable[[Any], "Awaitable[None] | None"]

# Events a listener may lag behind before its oldest ones are dropped.
QUEUE_LIMIT: Final = 10_000


@dataclass(eq=False)
class _Subscription:
    event_name: str
    listener: Listener
    queue: deque[Event] = field(default_factory=lambda: deque[Event]())
    wake: anyio.Event = field(default_factory=anyio.Event)
    dropped: int = 0
    active: bool = True


class EventHub:
    """Subscriptions and delivery. `on` works at any time; delivery happens while the hub runs."""

    def __init__(self) -> None:
        self._subscriptions: dict[str, list[_Subscription]] = {}
        # Read-only: the subscriptions by event name (an empty list: none), for per-request checks
        # that cannot afford `has_listeners`'s call.
        self.subscriptions: Mapping[str, Sequence[object]] = self._subscriptions
        self._task_group: anyio.abc.TaskGroup | None = None
        self._closed = anyio.Event()

    def on(self, event_name: EventName, listener: Listener) -> Callable[[], None]:
        """Call `listener(event)` for every event of that name; returns a function that unsubscribes."""
        if event_name not in EVENT_NAMES:
            raise ValueError(f"unknown event {event_name!r}; one of {sorted(EVENT_NAMES)}")
        subscription = _Subscription(event_name, listener)
        self._subscriptions.setdefault(event_name, []).append(subscription)
        if self._task_group is not None:
            self._task_group.start_soon(self._deliver, subscription)

        def unsubscribe() -> None:
            subscription.active = False
            subscription.wake.set()
            subscribers = self._subscriptions.get(event_name, [])
            if subscription in subscribers:
                subscribers.remove(subscription)

        return unsubscribe

    def has_listeners(self, event_name: str) -> bool:
        return bool(self._subscriptions.get(event_name))

    def emit(self, event: Event) -> None:
        for subscription in self._subscriptions.get(event.name, ()):
            if len(subscription.queue) >= QUEUE_LIMIT:
                subscription.queue.popleft()
                subscription.dropped += 1
            subscription.queue.append(event)
            subscription.wake.set()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Deliver events until cancelled (the app runs this in its task group)."""
        try:
            async with anyio.create_task_group() as tg:
                self._task_group = tg
                for subscribers in self._subscriptions.values():
                    for subscription in subscribers:
                        tg.start_soon(self._deliver, subscription)
                task_status.started()
                try:
                    await self._closed.wait()
                finally:
                    self._task_group = None
                    for subscribers in self._subscriptions.values():
                        for subscription in subscribers:
                            subscription.wake.set()
        finally:
            # A hub runs once per app run: the next run starts with a fresh close signal, even when
            # this one was cancelled (the app's shutdown deadline cutting off a slow listener).
            self._closed = anyio.Event()

    def close(self) -> None:
        """Stop delivering once every queued event has been handed over."""
        self._closed.set()

    async def _deliver(self, subscription: _Subscription) -> None:
        while subscription.active:
            if not subscription.queue:
                if self._closed.is_set():
                    return
                await subscription.wake.wait()
                subscription.wake = anyio.Event()
                continue
            event = subscription.queue.popleft()
            try:
                result = subscription.listener(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                # A listener's failure is its own: logged, and delivery goes on.
                logger.exception("listener for %r raised", subscription.event_name)
