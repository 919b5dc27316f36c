"""Serving one `McpApp` with hypercorn inside the caller's event loop (asyncio or Trio).

Used by the one-call per-bearer server and by the `asgi-mcp` CLI. Three choices matter:

- The socket is bound here, before hypercorn runs, so `port=0` yields the real port at once and
  connections made before hypercorn accepts simply wait in the listen backlog. Hypercorn gets a
  duplicate of the descriptor (`fd://`), which it owns and closes; the original is closed here.
- The app's lifespan is run here, not through hypercorn. Hypercorn ends its lifespan only after its
  connections have closed, and an open SSE stream never closes by itself: so shutdown ends the
  app's sessions (closing their streams) at the same time as it stops hypercorn, and finishes
  promptly instead of sitting out the graceful timeout.
- A shutdown trigger is always passed: without one, hypercorn installs process signal handlers,
  which a library must never do.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, Literal, cast

import anyio
import anyio.abc

from .._app.routes import send_probe
from .._core.asgi import Receive, Scope, Send, send_json
from .._core.errors import SERVER_BUSY, ConfigurationError

if TYPE_CHECKING:
    from hypercorn.config import Config

    from .._app.app import McpApp

__all__: list[str] = []

Backend = Literal["asyncio", "trio"]

SERVER_LOGGER: Final = "asgi_mcp.server"
ACCESS_LOGGER: Final = "asgi_mcp.access"
# Beyond the app's own shutdown_timeout, how long stopping may take before everything is cancelled.
STOP_MARGIN: Final = 1.0

_MISSING_HYPERCORN: Final = "serving needs hypercorn (and trio for the Trio backend): pip install 'asgi-mcp[server]'"


def running_backend() -> Backend:
    """The async library running the current task (Trio is only possible if it was imported)."""
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            return "asyncio"
        return "trio"
    return "asyncio"


def require_hypercorn(backend: Backend) -> None:
    """Raise `ConfigurationError` naming the extra to install when hypercorn (or trio) is missing."""
    try:
        import hypercorn.config  # noqa: F401  # pyright: ignore[reportUnusedImport]

        if backend == "trio":
            import trio  # noqa: F401  # pyright: ignore[reportUnusedImport]
    except ImportError as exc:
        raise ConfigurationError(_MISSING_HYPERCORN) from exc


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 picks a free port (read it with getsockname)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigurationError(f"cannot resolve host {host!r}: {exc}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        if sys.platform != "win32":
            # As every server does: a restart must not wait out TIME_WAIT of the previous run.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(100)
    except BaseException:
        sock.close()
        raise
    return sock


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class ServingShell:
    """The ASGI app hypercorn serves: answers lifespan itself, the health route, and 503 once stopping."""

    def __init__(self, app: McpApp, health_path: str | None) -> None:
        self.app = app
        # No cancel scope around the app's call: a scope the built-in server lends reaches it as is.
        self.asgi_mcp_inner_app = app  # `INNER_APP_ATTRIBUTE`
        self.health_path = health_path
        self.stopping = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await _lifespan_noop(receive, send)
            return
        if kind == "http":
            if self.health_path is not None and scope["path"] == self.health_path:
                await _health(scope, send)
                return
            if self.stopping:
                body = {"jsonrpc": "2.0", "id": None, "error": {"code": SERVER_BUSY, "message": "Server is stopping"}}
                await send_json(send, 503, body, [(b"connection", b"close")])
                return
        await self.app(scope, receive, send)


async def _lifespan_noop(receive: Receive, send: Send) -> None:
    # The app's lifespan is run by `HypercornServer` (see the module docstring).
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _health(scope: Scope, send: Send) -> None:
    """Liveness only: "ok", and nothing about tenants, sessions or configuration; as the app's own."""
    await send_probe(scope["method"], send, 200, b"ok")


class HypercornServer:
    """Runs an `McpApp` and hypercorn in the current event loop until `shutdown()`.

    `await task_group.start(server.run)` returns the bound port once the app runs and hypercorn
    accepts connections; `run` returns after `shutdown()`, within the app's `shutdown_timeout` plus
    a second, whatever clients still hold open.
    """

    def __init__(
        self, app: McpApp, *, host: str, port: int, health_path: str | None = None, access_log: bool = False
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.access_log = access_log
        self.shell = ServingShell(app, health_path)
        self._scope: anyio.CancelScope | None = None
        self._stop_hypercorn: anyio.Event | None = None
        self._stop_app: anyio.Event | None = None

    async def run(self, *, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        backend = running_backend()
        require_hypercorn(backend)
        self._stop_hypercorn, self._stop_app = anyio.Event(), anyio.Event()
        self.shell.stopping = False
        sock = bind_socket(self.host, self.port)
        try:
            port: int = sock.getsockname()[1]
            async with anyio.create_task_group() as tg:
                self._scope = tg.cancel_scope
                await tg.start(self._run_app, self._stop_app)
                if backend == "trio":
                    await tg.start(self._serve_trio, sock, self._stop_hypercorn)
                else:
                    await tg.start(self._serve_asyncio, sock, self._stop_hypercorn)
                task_status.started(port)
        finally:
            self._scope = None
            sock.close()

    def shutdown(self) -> None:
        """Begin stopping (idempotent): refuse new requests, end sessions, stop hypercorn."""
        if self._scope is None or self.shell.stopping:
            return
        self.shell.stopping = True
        assert self._stop_hypercorn is not None and self._stop_app is not None
        self._stop_hypercorn.set()
        self._stop_app.set()
        # The bound on stopping: whatever is still running after it is cancelled.
        self._scope.deadline = anyio.current_time() + self.app.config.shutdown_timeout + STOP_MARGIN

    async def _run_app(self, stop: anyio.Event, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with self.app.lifespan_context():
            task_status.started()
            await stop.wait()

    def _config(self, sock: socket.socket) -> Config:
        return hypercorn_config(sock, graceful_timeout=self.app.config.shutdown_timeout, access_log=self.access_log)

    async def _serve_trio(
        self, sock: socket.socket, stop: anyio.Event, *, task_status: anyio.abc.TaskStatus[Any]
    ) -> None:
        # Under Trio, anyio hands over Trio's own task status; hypercorn reports readiness on it.
        await serve_with("trio")(self.shell, self._config(sock), shutdown_trigger=stop.wait, task_status=task_status)

    async def _serve_asyncio(
        self, sock: socket.socket, stop: anyio.Event, *, task_status: anyio.abc.TaskStatus[Any]
    ) -> None:
        config = self._config(sock)
        # hypercorn's asyncio serve has no readiness signal; the socket already listens, so
        # connections made before it accepts wait in the backlog.
        task_status.started()
        await serve_with("asyncio")(self.shell, config, shutdown_trigger=stop.wait)


def hypercorn_config(sock: socket.socket, *, graceful_timeout: float, access_log: bool) -> Config:
    """hypercorn's configuration for serving on `sock` (a listening socket the caller closes)."""
    from hypercorn.config import Config

    from .access_log import ACCESS_LOG_FORMAT, SanitisedAccessLogger

    config = Config()
    # hypercorn owns (and closes) this duplicate descriptor; the caller closes the original.
    config.bind = [f"fd://{os.dup(sock.fileno())}"]
    config.graceful_timeout = graceful_timeout
    # Loggers, never hypercorn's defaults: those attach stderr handlers to global loggers.
    config.errorlog = logging.getLogger(SERVER_LOGGER)
    config.accesslog = logging.getLogger(ACCESS_LOGGER) if access_log else None
    # No header, query string or environment in the line nor in the record (see access_log).
    config.logger_class = SanitisedAccessLogger
    config.access_log_format = ACCESS_LOG_FORMAT
    return config


def serve_with(backend: Backend) -> Callable[..., Awaitable[None]]:
    """`hypercorn.asyncio.serve` or `hypercorn.trio.serve` (typed loosely: its ASGI types are its own)."""
    module = importlib.import_module(f"hypercorn.{backend}")
    return cast("Callable[..., Awaitable[None]]", module.serve)
