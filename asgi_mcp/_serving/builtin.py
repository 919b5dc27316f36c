"""Serving one `McpApp` with the built-in HTTP/1.1 server, as `HypercornServer` does with hypercorn.

The same shape and the same choices (see `hypercorn.py`): the app's lifespan is run here, beside the
server, so that stopping ends the app's sessions (closing their SSE streams) while requests drain;
`ServingShell` answers the health route and 503 once stopping. `one_call.py` and `cli.py` can take
either runner: both have `run(task_status=...)` reporting the bound port, and `shutdown()`.
"""

from __future__ import annotations

from functools import partial
from typing import Final

import anyio
import anyio.abc

from .._core.errors import ConfigurationError
from .http1 import BoundAddress, ServerConfig, listen, serve
from .http1.parsers import parser_names
from .hypercorn import Backend, HypercornServer

__all__ = ["BuiltinServer", "require_builtin"]

_MISSING: Final = "the built-in server needs h11 (and trio for the Trio backend): pip install 'asgi-mcp[server]'"


def require_builtin(backend: Backend) -> None:
    """Raise `ConfigurationError` naming the extra when no parser (or trio) is installed."""
    if not parser_names():
        raise ConfigurationError(_MISSING)
    if backend == "trio":
        try:
            import trio  # noqa: F401  # pyright: ignore[reportUnusedImport]
        except ImportError as exc:
            raise ConfigurationError(_MISSING) from exc


class BuiltinServer(HypercornServer):
    """`HypercornServer`'s interface and lifecycle, served by `asgi_mcp._serving.http1`."""

    async def run(self, *, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        self._stop_hypercorn, self._stop_app = anyio.Event(), anyio.Event()
        self.shell.stopping = False
        config = ServerConfig(
            host=self.host,
            port=self.port,
            access_log=self.access_log,
            graceful_timeout=self.app.config.shutdown_timeout,
            lifespan="off",  # the app's lifespan runs in `_run_app`, as with hypercorn
        )
        listeners = await listen(config)  # a taken port fails here, as a plain OSError
        try:
            async with anyio.create_task_group() as tg:
                self._scope = tg.cancel_scope
                await tg.start(self._run_app, self._stop_app)
                serving = partial(serve, self.shell, config, shutdown_trigger=self._stop_hypercorn.wait)
                address: BoundAddress = await tg.start(partial(serving, listeners=listeners))
                task_status.started(address.port)
        finally:
            self._scope = None
