"""What the connections of one server share."""

from __future__ import annotations

from typing import Any, Protocol

import anyio

from .config import ServerConfig
from .parsers import HeadParser


class Stoppable(Protocol):
    def stop_if_idle(self) -> None: ...


__all__ = ["ServerState"]


class ServerState:
    """What the connections share."""

    def __init__(self, app: Any, config: ServerConfig, parser: HeadParser) -> None:
        self.app = app
        self.config = config
        self.parser = parser
        self.stopping = False
        self.lifespan_state: dict[str, Any] | None = None
        self.connections: set[Stoppable] = set()
        self.all_closed = anyio.Event()
        self.slots = anyio.Semaphore(config.max_connections)
