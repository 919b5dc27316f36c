"""What the connections of one server share, and the clock its timeouts are measured in.

Timeouts are counted in ticks of one watch task per server (`server._watch_timeouts`), not armed as
deadlines per request: under Trio each deadline change pushes an entry on the run loop's deadline
heap, under asyncio it schedules a timer handle, and both outlive the request (until pruned) and
keep its cancel scope alive, so the cycle collector saw several survivors per request and ran full
collections that stalled every connection. A connection notes the tick at which it expires (an
int: no allocation); the watch cancels what has expired. A timeout fires between its length and
its length plus two ticks, never early.
"""

from __future__ import annotations

import math
import sys
from typing import Any, Final, Protocol

import anyio

from ..._io.loop import CancelScopeFactory, Loop
from .config import ServerConfig
from .parsers import HeadParser

__all__ = ["NEVER", "ServerState"]

NEVER: Final = sys.maxsize  # the expiry tick of nothing
_TICKS_PER_TIMEOUT: Final = 10  # the shortest timeout lasts this many ticks
_LONGEST_TICK: Final = 1.0


class Watched(Protocol):
    def stop_if_idle(self) -> None: ...

    def expire(self, tick: int) -> None: ...


class ServerState:
    """What the connections share."""

    def __init__(self, app: Any, config: ServerConfig, parser: HeadParser) -> None:
        """Made inside the running loop, whose cancel scopes the connections use."""
        self.app = app
        self.config = config
        self.parser = parser
        self.stopping = False
        self.lifespan_state: dict[str, Any] | None = None
        self.connections: set[Watched] = set()
        self.all_closed = anyio.Event()
        self.slots = anyio.Semaphore(config.max_connections)
        loop = Loop.current()
        self.on_trio = loop.trio  # what the connections' tasks and streams are made with (`server.py`)
        # Each connection's own scope: Trio's on Trio (anyio's wrapper costs a new connection about
        # 11,000 instructions, see `_io/loop.py`), anyio's on asyncio.
        self.cancel_scope: CancelScopeFactory = loop.cancel_scope
        shortest = min(config.headers_timeout, config.keepalive_timeout, config.write_timeout)
        self.tick_seconds = min(shortest / _TICKS_PER_TIMEOUT, _LONGEST_TICK)
        self.tick = 0
        self.headers_ticks = self.ticks_for(config.headers_timeout)
        self.keepalive_ticks = self.ticks_for(config.keepalive_timeout)
        self.write_ticks = self.ticks_for(config.write_timeout)
        self.send_timeout = {"seconds": config.write_timeout}  # in every scope (`SEND_TIMEOUT_EXTENSION`)

    def ticks_for(self, seconds: float) -> int:
        # One tick more: the tick in progress when the timeout starts may be nearly over.
        return math.ceil(seconds / self.tick_seconds) + 1

    def advance(self) -> None:
        """One tick has passed: expire what is due."""
        self.tick += 1
        for connection in self.connections:
            connection.expire(self.tick)
