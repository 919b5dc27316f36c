"""Real ASGI servers on 127.0.0.1: uvicorn (h11) on asyncio, hypercorn's Trio worker on Trio and the built-in
server on both backends with both parsers, all started in-process; and granian, run as its users run it: the
`granian` command in a process of its own.

The in-process servers bind a free port themselves (no find-a-free-port race), yield their base URL once they
accept connections, stop gracefully (bounded) on exit and leave the test process's signal handlers alone.
granian is given a free port (it cannot report the one port 0 picks) and stopped with SIGINT.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager, contextmanager
from functools import partial
from typing import Any, Final

import anyio
import anyio.lowlevel

from .builtin import PARSERS, builtin_url
from .granian_app import OPTIONS_ENV
from .processes import ProcessRun, not_installed, running_process

READY_TIMEOUT: Final = 10.0
STOP_TIMEOUT: Final = 10.0


async def _wait_for_port(port: int) -> None:
    with anyio.fail_after(READY_TIMEOUT):
        while True:
            try:
                stream = await anyio.connect_tcp("127.0.0.1", port)
            except OSError:
                await anyio.lowlevel.checkpoint()
                continue
            await stream.aclose()
            return


def quiet_uvicorn(config: Any) -> Any:
    """A `uvicorn.Server` for `config` that leaves the test process's SIGINT/SIGTERM handlers alone.

    uvicorn has no `install_signal_handlers` switch; `capture_signals` is the hook it uses.
    """
    import uvicorn

    class Quiet(uvicorn.Server):
        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return Quiet(config)


@asynccontextmanager
async def uvicorn_server(app: Any, *, port: int = 0, graceful: float = 2.0) -> AsyncIterator[str]:
    """uvicorn on 127.0.0.1:`port` (0: a free one; SO_REUSEADDR, so a restart may take the same port
    again); stopping waits at most `graceful` seconds for open connections (SSE streams) to close."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        lifespan="on",
        http="h11",
        ws="none",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=graceful,  # type: ignore[arg-type]  # typed int, read as a number of seconds
    )
    server = quiet_uvicorn(config)
    stopped = anyio.Event()

    async def run() -> None:
        try:
            await server.serve(sockets=[sock])
        finally:
            stopped.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            try:
                await _wait_for_port(port)
                yield f"http://127.0.0.1:{port}"
            finally:
                server.should_exit = True
                with anyio.move_on_after(STOP_TIMEOUT, shield=True):
                    await stopped.wait()
                tg.cancel_scope.cancel()
    finally:
        sock.close()


@asynccontextmanager
async def hypercorn_trio_server(app: Any, *, port: int = 0, graceful: float = 2.0) -> AsyncIterator[str]:
    """hypercorn's Trio worker on 127.0.0.1:`port` (0: a free one), as `uvicorn_server`."""
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.graceful_timeout = graceful
    config.accesslog = None
    config.loglevel = "WARNING"
    shutdown = anyio.Event()
    stopped = anyio.Event()

    async def run(*, task_status: Any) -> None:
        try:
            await serve(app, config, shutdown_trigger=shutdown.wait, task_status=task_status, mode="asgi")
        finally:
            stopped.set()

    async with anyio.create_task_group() as tg:
        with anyio.fail_after(READY_TIMEOUT):
            binds: list[str] = await tg.start(run)
        port = int(binds[0].rsplit(":", 1)[1])
        try:
            await _wait_for_port(port)
            yield f"http://127.0.0.1:{port}"
        finally:
            shutdown.set()
            with anyio.move_on_after(STOP_TIMEOUT, shield=True):
                await stopped.wait()
            tg.cancel_scope.cancel()


# server name -> (the one anyio backend it runs on, how to start it)
SERVERS: dict[str, tuple[str, Callable[[Any], AbstractAsyncContextManager[str]]]] = {
    "uvicorn": ("asyncio", uvicorn_server),
    "hypercorn-trio": ("trio", hypercorn_trio_server),
}
for _backend in ("asyncio", "trio"):
    for _parser in PARSERS:
        SERVERS[f"builtin-{_parser}-{_backend}"] = (_backend, partial(builtin_url, parser=_parser))


# The in-process fleet tests' two workers per backend, on servers of different kinds: what crosses
# workers crosses HTTP servers too.
WORKER_SERVERS: Final = {
    "asyncio": ("uvicorn", "builtin-httptools-asyncio"),
    "trio": ("hypercorn-trio", "builtin-h11-trio"),
}


@asynccontextmanager
async def serve_workers(make_app: Callable[[], Any], backend: str) -> AsyncIterator[list[tuple[Any, str]]]:
    """Two apps of `make_app()` served on the servers WORKER_SERVERS names for `backend`: each app
    with its MCP endpoint's URL."""
    async with AsyncExitStack() as stack:
        served = []
        for name in WORKER_SERVERS[backend]:
            app = make_app()
            served.append((app, await stack.enter_async_context(SERVERS[name][1](app)) + "/mcp"))
        yield served


@asynccontextmanager
async def serve_http(app: Any, backend: str) -> AsyncIterator[str]:
    """Serve `app` on the server of `backend` (uvicorn on asyncio, hypercorn on Trio); yields the base URL."""
    server = uvicorn_server(app) if backend == "asyncio" else hypercorn_trio_server(app)
    async with server as base:
        yield base


GRANIAN_TARGET: Final = "tests.kit.granian_app:app"
GRANIAN_START_TIMEOUT: Final = 30.0
GRANIAN_PORT_ATTEMPTS: Final = 5


def require_granian() -> None:
    """Skip without granian on a developer machine; under CI (`CI` set) its absence is a failure."""
    if importlib.util.find_spec("granian") is None:
        missing = "granian is not installed (it is in the `test` dependency group)"
        not_installed(missing, how=".ci/run installs the test group")


def free_port() -> int:
    """A port free now on 127.0.0.1, for a server that cannot report the one port 0 picks."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def _granian_process(port: int, options: dict[str, Any] | None) -> AsyncIterator[ProcessRun]:
    """The granian command on `port`, its output (stdout and stderr) collected; killed if still running at exit."""
    args = [sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--workers", "1", "--no-access-log", GRANIAN_TARGET]
    env = {**os.environ, OPTIONS_ENV: json.dumps(options or {})}
    async with running_process("granian", args, env=env, merge_stderr=True) as run:
        yield run


@asynccontextmanager
async def granian_server(options: dict[str, Any] | None = None) -> AsyncIterator[str]:
    """`granian --interface asgi tests.kit.granian_app:app` (asyncio, one worker) with the app's `options`.

    Ready when granian says its worker started: the socket is bound before that, so requests sent
    from then on wait in the backlog until the worker (and the app's lifespan) runs them. granian
    binds the port itself, so a port another process took in between is retried with a new one.
    """
    require_granian()
    for attempt in range(1, GRANIAN_PORT_ATTEMPTS + 1):
        port = free_port()
        async with _granian_process(port, options) as run:
            ready = lambda out: "Started worker-1" in out or "Address already in use" in out  # noqa: E731
            await run.wait_for(ready, within=GRANIAN_START_TIMEOUT)
            if "Started worker-1" not in run.stdout:
                assert attempt < GRANIAN_PORT_ATTEMPTS, f"no free port for granian:\n{run}"
                continue
            yield f"http://127.0.0.1:{port}"
            assert await run.stop() == 0, f"granian did not stop cleanly:\n{run}"
            return
