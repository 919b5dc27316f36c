"""The ASGI lifespan protocol, run by the server around serving.

With `lifespan="auto"` an app that raises before answering `lifespan.startup` is taken not to
support lifespans, and is served anyway; with "on" that is an error; "off" never starts one.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Final

import anyio
import anyio.abc

from .connection import SERVER_LOGGER

__all__ = ["Lifespan"]

_logger: Final = logging.getLogger(SERVER_LOGGER)
Message = dict[str, Any]


class Lifespan:
    def __init__(self, app: Any, mode: str) -> None:
        self.app = app
        self.mode = mode
        self.state: dict[str, Any] | None = None
        self._to_app, self._from_server = anyio.create_memory_object_stream[Message](2)
        self._answered = anyio.Event()
        self._answer: Message = {}
        self._finished = anyio.Event()
        self.supported = False
        self._shutdown_sent = False
        self._failure_logged = False

    async def startup(self, task_group: anyio.abc.TaskGroup) -> str | None:
        """Start the app's lifespan in `task_group`; why it failed, or None."""
        if self.mode == "off":
            return None
        state: dict[str, Any] = {}
        task_group.start_soon(self._run, state)
        with contextlib.suppress(anyio.BrokenResourceError):  # the app returned (or raised) without reading it
            await self._to_app.send({"type": "lifespan.startup"})
        await self._answered.wait()
        if self._answer.get("type") == "lifespan.startup.complete":
            self.supported = True
            self.state = state
            return None
        if self._answer.get("type") == "lifespan.startup.failed":
            return f"the app failed to start: {self._answer.get('message', '')}"
        if self.mode == "on":
            return "the app does not support the ASGI lifespan protocol"
        return None

    async def shutdown(self) -> None:
        """Ask the app to shut down and wait for its answer (the caller bounds the wait)."""
        if not self.supported:
            return
        if not self._shutdown_sent:  # asked once; a second call waits for the same answer
            self._shutdown_sent = True
            self._answered = anyio.Event()
            try:
                await self._to_app.send({"type": "lifespan.shutdown"})
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                return
        await self._answered.wait()
        if self._answer.get("type") == "lifespan.shutdown.failed" and not self._failure_logged:
            self._failure_logged = True
            _logger.error("ASGI lifespan shutdown failed: %s", self._answer.get("message", ""))

    def close(self) -> None:
        """No more messages: an app still waiting for one sees the end of the stream and returns."""
        self._to_app.close()

    async def _run(self, state: dict[str, Any]) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": state}
        try:
            await self.app(scope, self._receive, self._send)
        except Exception:
            if self.supported or self.mode == "on":
                _logger.exception("Exception in ASGI lifespan")
            else:
                _logger.info("ASGI lifespan not supported by the app")
        finally:
            self._from_server.close()
            self._answered.set()
            self._finished.set()

    async def _receive(self) -> Message:
        return await self._from_server.receive()

    async def _send(self, message: Message) -> None:
        self._answer = message
        self._answered.set()
