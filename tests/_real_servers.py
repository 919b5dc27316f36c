"""Real ASGI servers on 127.0.0.1, started in-process: uvicorn (asyncio), hypercorn's Trio worker, and
the built-in server on both backends with both parsers.

Both bind port 0 themselves (no find-a-free-port race) and are stopped gracefully on exit.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any

import anyio

from ._builtin import PARSERS, builtin_url
from ._polling import wait_until


def _uvicorn_server(config: Any) -> Any:
    """A uvicorn.Server that leaves the test process's SIGINT/SIGTERM handlers alone.

    uvicorn 0.54 has no `install_signal_handlers` switch; `capture_signals` is the hook it uses.
    """
    import uvicorn

    class Quiet(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return Quiet(config)


@asynccontextmanager
async def uvicorn_server(app: Any) -> AsyncIterator[str]:
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False, timeout_graceful_shutdown=2)
    server = _uvicorn_server(config)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(server.serve, sockets=[sock]))
            await wait_until(lambda: server.started or server.should_exit, timeout=10)
            assert server.started, "uvicorn did not start"
            try:
                yield f"http://127.0.0.1:{port}"
            finally:
                server.should_exit = True
    finally:
        sock.close()


@asynccontextmanager
async def hypercorn_trio_server(app: Any) -> AsyncIterator[str]:
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.graceful_timeout = 2
    config.accesslog = None
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        binds = await tg.start(partial(serve, app, config, shutdown_trigger=stop.wait))
        try:
            yield str(binds[0])
        finally:
            stop.set()


# server name -> (the one anyio backend it runs on, how to start it)
SERVERS: dict[str, tuple[str, Callable[[Any], AbstractAsyncContextManager[str]]]] = {
    "uvicorn": ("asyncio", uvicorn_server),
    "hypercorn-trio": ("trio", hypercorn_trio_server),
}
for _backend in ("asyncio", "trio"):
    for _parser in PARSERS:
        SERVERS[f"builtin-{_parser}-{_backend}"] = (_backend, partial(builtin_url, parser=_parser))
