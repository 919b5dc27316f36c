"""One run of the one-call server: which HTTP server serves it, where it listens, and what its
serving task shares with the tasks that start, serve or stop it (events, never cancel scopes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import anyio

from .._core.errors import ConfigurationError
from .._ops.lifecycle import EventHub
from .builtin import BuiltinServer, require_builtin
from .hypercorn import Backend, HypercornServer, require_hypercorn

__all__ = ["ServerInfo", "ServerKind", "ServingRun", "StartedRun", "deliver_remaining", "require_server"]

# How long stop() waits for listeners to take the `stopped` event.
_STOPPED_DELIVERY_TIMEOUT: Final = 5.0


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """Where a started server listens. `port` is the bound port (never 0); `url` includes the endpoint."""

    url: str
    host: str
    port: int
    endpoint: str
    started_at: float  # seconds since the epoch (time.time())


ServerKind = Literal["builtin", "hypercorn"]


def require_server(server: ServerKind, backend: Backend) -> type[HypercornServer]:
    """The runner class for `server`; `ConfigurationError` names the extra to install when missing."""
    if server == "hypercorn":
        require_hypercorn(backend)
        return HypercornServer
    if server != "builtin":
        raise ConfigurationError("server must be 'builtin' or 'hypercorn'")
    require_builtin(backend)
    return BuiltinServer


class ServingRun:
    """One serving run, from `start()` to `stopped`: what the serving task shares with the tasks
    that start, serve or stop it. Only the serving task enters cancel scopes; the others wait on
    these events."""

    __slots__ = ("awaited", "failure", "info", "loop", "ready", "stop_requested", "stopped")

    def __init__(self, loop: object, *, awaited: bool) -> None:
        self.loop = loop  # the event loop serving it: stop() from another one is refused
        self.awaited = awaited  # `serve()` waits for it and raises its failure (else: logged)
        self.ready = anyio.Event()  # serving (`info`), or failed to start (`failure`)
        self.stop_requested = anyio.Event()
        self.stopped = anyio.Event()  # `stopped` emitted and handed to listeners
        self.info: ServerInfo | None = None
        self.failure: Exception | None = None


@dataclass(frozen=True, slots=True)
class StartedRun:
    run: ServingRun
    info: ServerInfo


async def deliver_remaining(hub: EventHub) -> None:
    """Hand `stopped` (and anything else emitted after the app stopped) to listeners.

    The app's lifespan runs the hub; it has ended, so the hub runs once more, just to drain.
    """
    with anyio.move_on_after(_STOPPED_DELIVERY_TIMEOUT, shield=True):
        async with anyio.create_task_group() as tg:
            await tg.start(hub.run)
            hub.close()
