"""One legacy session (`Mcp-Session-Id`): the SDK server kernel (`ServerRunner`) bound to a
`SessionDispatcher`, and the session's outbound streams.

A session has no task of its own: a request runs in the task of the POST that carries it, so an idle
session is only memory. Its own state (listening, closed) is the table in `_core.live_session`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio.abc
from mcp.server.connection import Connection
from mcp.server.runner import aclose_shielded
from mcp.shared.message import ServerMessageMetadata
from mcp.shared.transport_context import TransportContext
from mcp.types import InitializeRequestParams

from .._core.asgi import HttpRequest
from .._core.http import FIRST_PRIMING_VERSION
from .._core.live_session import LiveAction, LiveInput, LiveState
from .._io.loop import Loop
from .._kernel.context import RequestObserver
from .._kernel.hosting import ServerHost
from .._kernel.runner import KernelRunner, has_teardown, kernel_handlers
from .._ports.replay import EventLog, ReplayedEvent
from .dispatcher import SessionDispatcher
from .streams import Frame, OutboundStream, SessionStreams

__all__: list[str] = []


class LegacySession:
    """One session: its server kernel and its outbound streams. No task: its requests run it."""

    # `__weakref__`: the audit's tool observer reads the client info through a weak reference, since
    # the dispatcher holds the observer and an ended session must leave no cycle behind.
    __slots__ = (
        "__weakref__",
        "_events",
        "_retry_ms",
        "_task_group",
        "connection",
        "dispatcher",
        "host",
        "outbound",
        "session_id",
    )

    def __init__(
        self,
        session_id: str,
        host: ServerHost,
        task_group: anyio.abc.TaskGroup,
        loop: Loop,
        *,
        events: EventLog | None,
        retry_ms: int | None,
        observer: RequestObserver | None,
        tag: str | None = None,
    ) -> None:
        self.session_id = session_id
        self.host = host
        self._task_group = task_group
        self._events = events
        self._retry_ms = retry_ms
        self.outbound = SessionStreams(events, tag)
        self.dispatcher = SessionDispatcher(self.outbound, task_group, loop.cancel_scope, observer=observer)
        self.connection = Connection.for_loop(self.dispatcher, session_id=session_id)
        self.dispatcher.bind(*kernel_handlers(KernelRunner(host.server, self.connection, host.state, host=host)))

    @property
    def protocol_version(self) -> str:
        return self.connection.protocol_version

    def restore(self, protocol_version: str, initialize_params: Mapping[str, Any]) -> None:
        """Adopted from another worker: the kernel sees the connection as initialized with what the
        client sent then, as if this worker had answered its `initialize` (raises ValidationError
        for params that are no `initialize` params)."""
        connection = self.connection
        connection.client_params = InitializeRequestParams.model_validate(dict(initialize_params), by_name=False)
        connection.protocol_version = protocol_version
        connection.initialized.set()

    @property
    def standalone(self) -> OutboundStream:
        return self.outbound.standalone

    @property
    def closed(self) -> bool:
        return self.outbound.state is LiveState.CLOSED

    @property
    def listening(self) -> bool:
        """Whether a GET holds the standalone stream."""
        return self.outbound.state is LiveState.LISTENING

    def close(self) -> None:
        """Cancel the session's handlers and end every attached connection. Idempotent; never awaits."""
        if self.outbound.step(LiveInput.CLOSE) is not LiveAction.TEAR_DOWN:
            return
        self.dispatcher.close()
        self.outbound.close()
        # Per-connection cleanup the handlers registered (`Connection.exit_stack`), shielded and bounded.
        if has_teardown(self.connection):
            self._task_group.start_soon(aclose_shielded, self.connection)

    @property
    def resumable(self) -> bool:
        """Whether its streams can be resumed (SEP-1699): an event store, and a negotiated version of
        2025-11-25 or later. The negotiated version decides, not the request's header: clients send
        stale headers."""
        return self._events is not None and self.protocol_version >= FIRST_PRIMING_VERSION

    async def priming_frame(self, stream: OutboundStream) -> Frame | None:
        """The SEP-1699 priming event, for resumable sessions (see `resumable`); none while the event
        store is out of reach: it would only be an id that no `Last-Event-ID` can resume from."""
        if not self.resumable:
            return None
        assert self._events is not None
        event_id = await self._events.store(stream.store_id, None, None)
        return Frame(event_id, "", False, self._retry_ms) if event_id is not None else None

    @property
    def pollable(self) -> bool:
        """Whether a stream may be closed for polling now: not while the event store is out of reach,
        since the events it cannot store reach the client only over the open connection."""
        return self._events is not None and not self._events.degraded

    async def replay(self, last_event_id: str) -> tuple[str, list[ReplayedEvent]] | None:
        if self._events is None:
            return None
        return await self._events.replay(last_event_id, self.outbound.tag)


def request_metadata(
    request: HttpRequest, session: LegacySession, stream: OutboundStream, *, can_send: bool
) -> tuple[ServerMessageMetadata, TransportContext]:
    """What the kernel learns of the HTTP request carrying a message, and how its handler may close
    the request's stream for polling."""
    transport = TransportContext(kind="streamable-http", can_send_request=can_send, headers=request.headers)
    if not (can_send and session.resumable):
        # As the SDK's transport: a stream may be closed for polling (SEP-1699) only when the
        # client can resume it. Otherwise the closing would take the answer away with it.
        return ServerMessageMetadata(request_context=request, can_send_request=can_send), transport

    async def close_sse_stream() -> None:
        if session.pollable:
            await stream.close_connection()

    async def close_standalone_sse_stream() -> None:
        if session.pollable:
            session.standalone.detach()

    metadata = ServerMessageMetadata(
        request_context=request,
        close_sse_stream=close_sse_stream,
        close_standalone_sse_stream=close_standalone_sse_stream,
        can_send_request=can_send,
    )
    return metadata, transport
