"""Real ASGI servers on 127.0.0.1, started in-process: uvicorn (asyncio), hypercorn's Trio worker, and
the built-in server on both backends with both parsers; and granian, run as its users run it: the
`granian` command in a process of its own.

The in-process servers bind port 0 themselves (no find-a-free-port race) and are stopped gracefully
on exit; granian is given a free port (it cannot report the one port 0 picks) and stopped with SIGINT.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any, Final

import anyio
import pytest

from ._builtin import PARSERS, builtin_url
from ._cli_process import REPO, CliRun
from ._granian_app import OPTIONS_ENV
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


GRANIAN_TARGET: Final = "tests._granian_app:app"
GRANIAN_START_TIMEOUT: Final = 30.0
GRANIAN_PORT_ATTEMPTS: Final = 5


def require_granian() -> None:
    """Skip without granian on a developer machine; under CI (`CI` set) its absence is a failure."""
    if importlib.util.find_spec("granian") is None:
        missing = "granian is not installed (it is in the `test` dependency group)"
        if os.environ.get("CI"):
            pytest.fail(f"{missing}; CI must have it (.ci/run installs the test group)")
        pytest.skip(missing)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def _granian_process(port: int, options: dict[str, Any] | None) -> AsyncIterator[CliRun]:
    """The granian command on `port`, its output (stdout and stderr) collected; killed if still running at exit."""
    args = [sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--workers", "1", "--no-access-log", GRANIAN_TARGET]
    env = {**os.environ, OPTIONS_ENV: json.dumps(options or {})}
    process = await anyio.open_process(
        args, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    run = CliRun(process)
    try:
        async with process, anyio.create_task_group() as tg:
            assert process.stdout is not None
            tg.start_soon(run.collect, process.stdout, "stdout")
            try:
                yield run
            finally:
                if process.returncode is None:
                    process.kill()
    except BaseException:
        sys.stderr.write(str(run))
        raise


@asynccontextmanager
async def granian_server(options: dict[str, Any] | None = None) -> AsyncIterator[str]:
    """`granian --interface asgi tests._granian_app:app` (asyncio, one worker) with the app's `options`.

    Ready when granian says its worker started: the socket is bound before that, so requests sent
    from then on wait in the backlog until the worker (and the app's lifespan) runs them. granian
    binds the port itself, so a port another process took in between is retried with a new one.
    """
    require_granian()
    for attempt in range(1, GRANIAN_PORT_ATTEMPTS + 1):
        port = _free_port()
        async with _granian_process(port, options) as run:
            ready = lambda out: "Started worker-1" in out or "Address already in use" in out  # noqa: E731
            await run.wait_for(ready, within=GRANIAN_START_TIMEOUT)
            if "Started worker-1" not in run.stdout:
                assert attempt < GRANIAN_PORT_ATTEMPTS, f"no free port for granian:\n{run}"
                continue
            yield f"http://127.0.0.1:{port}"
            assert await run.stop() == 0, f"granian did not stop cleanly:\n{run}"
            return
