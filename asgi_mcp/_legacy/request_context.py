"""The context of one inbound request of a legacy session, as the server kernel sees it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from mcp.shared.dispatcher import CallOptions
from mcp.shared.exceptions import NoBackChannelError
from mcp.shared.message import ServerMessageMetadata
from mcp.shared.transport_context import TransportContext

from .._core.exchanges import ExchangeState
from .._core.jsonrpc import RequestId
from .._io.loop import CancelScope
from .._kernel.context import PeerCancellation, progress_params
from .streams import OutboundStream

__all__ = ["RequestContext"]

_SETTLED: Final = ExchangeState.SETTLED


class Dispatching(Protocol):
    """What a request's context needs of its session's dispatcher (`dispatcher.SessionDispatcher`)."""

    async def emit(self, stream: OutboundStream, message: dict[str, Any], *, final: bool = False) -> None: ...

    async def call(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None, stream: OutboundStream
    ) -> dict[str, Any]: ...


@dataclass(eq=False, slots=True)
class RequestContext(PeerCancellation):
    """`DispatchContext` of one inbound request: its back-channel is the request's own stream."""

    transport: TransportContext
    request_id: RequestId
    message_metadata: ServerMessageMetadata
    _dispatcher: Dispatching
    stream: OutboundStream
    _progress_token: str | int | None = None
    # Its place among the session's requests in flight (see `_core.exchanges`); unused by notifications.
    state: ExchangeState = ExchangeState.ADMITTED
    scope: CancelScope | None = None
    client_key: RequestId = 0
    shadowed: RequestContext | None = None

    @property
    def can_send_request(self) -> bool:
        return self.transport.can_send_request and self.state is not _SETTLED

    async def notify(self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None) -> None:
        if self.state is _SETTLED:
            return  # a task the handler left behind: its request was answered
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = dict(params)
        await self._dispatcher.emit(self.stream, message)

    async def send_raw_request(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None
    ) -> dict[str, Any]:
        if not self.can_send_request:
            raise NoBackChannelError(method)
        return await self._dispatcher.call(method, params, opts, self.stream)

    async def progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        if self._progress_token is not None:
            await self.notify("notifications/progress", progress_params(self._progress_token, progress, total, message))
