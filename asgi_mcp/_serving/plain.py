"""Serving an ASGI app that is not an MCP one: `asgi-mcp serve` takes any ASGI 3 application.

An `McpApp` is served by the runners in `builtin.py` and `hypercorn.py`, which run its lifespan
beside the server so that stopping ends its sessions while requests drain. Any other app is served
as those servers serve apps: the server runs the app's lifespan itself (if the app has one) and
stops gracefully when `stop` is set, within `graceful_timeout`.
"""

from __future__ import annotations

import inspect
from functools import partial
from typing import Any, Final

import anyio
import anyio.abc

from .builtin import require_builtin
from .http1 import ServerConfig, listen, serve
from .hypercorn import bind_socket, hypercorn_config, require_hypercorn, running_backend, serve_with

__all__: list[str] = []

GRACEFUL_TIMEOUT: Final = 5.0


def is_asgi_app(obj: object) -> bool:
    """An ASGI 3 application: a coroutine function of (scope, receive, send), or an object whose
    `__call__` is one (Starlette, FastAPI, Litestar, Quart and Django apps are such objects)."""
    if not callable(obj):
        return False
    call: Any = obj if inspect.isroutine(obj) else getattr(obj, "__call__", None)  # noqa: B004
    if not inspect.iscoroutinefunction(call):
        return False
    try:
        inspect.signature(obj).bind(None, None, None)
    except (TypeError, ValueError):
        return False
    return True


async def serve_plain(
    app: Any,
    *,
    server: str,
    host: str,
    port: int,
    access_log: bool,
    stop: anyio.Event,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` until `stop` is set; reports the bound port (never 0) through `task_status`."""
    backend = running_backend()
    if server == "hypercorn":
        require_hypercorn(backend)
        sock = bind_socket(host, port)
        try:
            bound: int = sock.getsockname()[1]
            settings = hypercorn_config(sock, graceful_timeout=GRACEFUL_TIMEOUT, access_log=access_log)

            async def serving(*, task_status: anyio.abc.TaskStatus[Any] = anyio.TASK_STATUS_IGNORED) -> None:
                if backend == "trio":  # hypercorn reports readiness on Trio's own task status
                    await serve_with(backend)(app, settings, shutdown_trigger=stop.wait, task_status=task_status)
                else:  # no readiness signal; the socket already listens, early connections wait
                    task_status.started()
                    await serve_with(backend)(app, settings, shutdown_trigger=stop.wait)

            async with anyio.create_task_group() as tg:
                await tg.start(serving)
                task_status.started(bound)
        finally:
            sock.close()
        return
    require_builtin(backend)
    config = ServerConfig(host=host, port=port, access_log=access_log, graceful_timeout=GRACEFUL_TIMEOUT)
    listeners = await listen(config)  # a taken port fails here, as a plain OSError
    async with anyio.create_task_group() as tg:
        address = await tg.start(partial(serve, app, config, shutdown_trigger=stop.wait, listeners=listeners))
        task_status.started(address.port)
