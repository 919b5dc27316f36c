"""The built-in HTTP/1.1 server, started in-process on the running backend for tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio

from asgi_mcp._serving.http1 import BoundAddress, ServerConfig, serve

PARSERS = ["h11", "httptools"]


@asynccontextmanager
async def builtin_server(app: Any, parser: str = "h11", **options: Any) -> AsyncIterator[BoundAddress]:
    """Serve `app` on a free 127.0.0.1 port (or `uds=`); stopped gracefully on exit."""
    options.setdefault("port", 0)
    options.setdefault("graceful_timeout", 2.0)
    config = ServerConfig(parser=parser, **options)  # type: ignore[arg-type]
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        address: BoundAddress = await tg.start(partial(serve, app, config, shutdown_trigger=stop.wait))
        try:
            yield address
        finally:
            stop.set()


@asynccontextmanager
async def builtin_url(app: Any, parser: str = "h11", **options: Any) -> AsyncIterator[str]:
    async with builtin_server(app, parser, **options) as address:
        yield address.url
