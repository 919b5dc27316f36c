"""A served MCP server: the SDK `Server` plus its lifespan, entered once and exited once.

The lifespan runs in a task of its own, so it is entered and exited by the same task (anyio cancel
scopes inside a user's lifespan demand that) whichever request first needed the server.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import anyio.abc
from mcp.server import Server

from .._core.errors import ConfigurationError
from .._ops.telemetry import instrument
from .results import plain_copy

__all__: list[str] = []

logger = logging.getLogger("asgi_mcp.hosting")

_SCALARS = (str, int, float, bool, type(None))


def as_lowlevel_server(server: Any) -> Server[Any]:
    """Accept an SDK low-level `Server` or an `MCPServer` (whose low-level server is the one served)."""
    if isinstance(server, Server):
        return server  # pyright: ignore[reportUnknownVariableType]
    lowlevel = getattr(server, "_lowlevel_server", None)
    if isinstance(lowlevel, Server):
        return lowlevel  # pyright: ignore[reportUnknownVariableType]
    raise ConfigurationError(f"expected an mcp Server or MCPServer, got {type(server).__name__}")


class ServerHost:
    """Runs one server's lifespan for as long as the host is up; `state` is the lifespan's value."""

    __slots__ = (
        "__weakref__",  # per-server caches elsewhere (the modern era's tool schemas) hold hosts weakly
        "_failed",
        "_ready",
        "_stamp",
        "_started",
        "_stop",
        "label",
        "retired",
        "server",
        "sessions",
        "state",
    )

    def __init__(self, server: Any, *, label: str | None = None) -> None:
        self.server = as_lowlevel_server(server)
        instrument(self.server)
        self.label = label
        self.state: Any = None
        self._ready = anyio.Event()
        self._stop = anyio.Event()
        self._failed: BaseException | None = None
        self._started = False
        # Live sessions served by this server; a retired server stops when the last one ends.
        self.sessions = 0
        self.retired = False
        self._stamp: tuple[dict[str, Any], bool] | None = None  # the server's stamp, and whether it is flat

    def server_info_stamp(self) -> dict[str, Any]:
        """`Server.server_info_stamp` (a fresh copy of the server's identity, as each 2026-era answer
        carries it) without its `copy.deepcopy`: the SDK's value, taken on first use (the SDK fixes it
        then too), copied as the plain JSON data it is."""
        if self._stamp is None:
            source = self.server.server_info_stamp
            self._stamp = source, all(type(value) in _SCALARS for value in source.values())
        source, flat = self._stamp
        if flat:
            return source.copy()  # nothing in it to share
        copied: dict[str, Any] = plain_copy(source)
        return copied

    @property
    def name(self) -> str:
        return self.server.name

    @property
    def version(self) -> str | None:
        return self.server.version

    async def start(self, task_group: anyio.abc.TaskGroup) -> None:
        """Enter the lifespan (once; concurrent callers wait for the same start)."""
        if not self._started:
            self._started = True
            task_group.start_soon(self._run, name=f"asgi_mcp lifespan of {self.server.name!r}")
        await self._ready.wait()
        if self._failed is not None:
            raise self._failed

    async def _run(self) -> None:
        try:
            async with self.server.lifespan(self.server) as state:
                self.state = state
                self._ready.set()
                await self._stop.wait()
        except Exception as exc:
            logger.exception("lifespan of MCP server %r failed", self.server.name)
            self._failed = exc
        finally:
            self._ready.set()

    def stop(self) -> None:
        """Let the lifespan exit; its task finishes in the background."""
        self._stop.set()

    def retire(self) -> None:
        """No new sessions will use this server: stop it now if none is live, else after the last."""
        self.retired = True
        if self.sessions == 0:
            self.stop()

    def release(self) -> None:
        """A session of this server ended."""
        self.sessions -= 1
        if self.retired and self.sessions == 0:
            self.stop()
