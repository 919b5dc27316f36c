"""The one-call multi-tenant server: an `McpApp` over `Tenants`, served in-process by the built-in
HTTP/1.1 server (or hypercorn, `server="hypercorn"`).

    server = create_per_bearer_server(port=0).add_token(token, factory, label="alice")
    async with server:                     # or: info = await server.start() ... await server.stop()
        print(server.server_info().url)    # the real port, even for port=0
    info = await task_group.start(server.serve)   # or structured, in a task group of yours

One task serves: it owns the task group running the app's lifespan and hypercorn, and every cancel
scope in it. Other tasks meet it only through events (stop requested, stopped), so `stop()` works
from any task of the event loop. `start()` runs that task outside the caller's task groups, so the
caller's scopes and the server's never interleave. It never installs process signal handlers,
never serves anything about tenants without a token, and stopping is bounded even while clients
hold SSE streams open (see `hypercorn`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from functools import partial
from types import TracebackType
from typing import Any, Final

import anyio
import anyio.abc
from mcp.server.streamable_http import EventStore

from .._app.app import McpApp
from .._core.errors import ConfigurationError
from .._ops.lifecycle import EventName, Listener, Started, Stopped
from .._tenancy.tenants import DEFAULT_DRAIN_TIMEOUT, ServerFactory, SessionPolicy, Tenants
from .detached import current_event_loop, spawn_detached
from .hypercorn import SERVER_LOGGER, Backend, HypercornServer, running_backend, url_host
from .runs import ServerInfo, ServerKind, ServingRun, StartedRun, deliver_remaining, require_server

__all__ = ["PerBearerServer", "ServerInfo", "create_per_bearer_server"]

# McpApp options the one-call server decides itself.
# `server` is a parameter of its own (the HTTP server), not the McpApp option.
_RESERVED: Final = frozenset({"tenants", "token_verifier", "path"})
_FOREIGN_LOOP: Final = (
    "stop() must run in the event loop that serves the server; from another thread, call "
    "anyio.from_thread.run(server.stop) (in a thread anyio started) or hand it to that loop "
    "(asyncio.run_coroutine_threadsafe(server.stop(), loop), trio.from_thread.run(server.stop, trio_token=...))"
)

_logger = logging.getLogger(SERVER_LOGGER)


class PerBearerServer:
    """An MCP server where each bearer token reaches its own MCP server. Build it with
    `create_per_bearer_server`.

    Token methods are synchronous, chainable and usable before `start()` and while serving. Tokens
    are kept as SHA-256 digests; stats, events and logs know a tenant only by its id (the `label`
    given to `add_token`, else a digest prefix).

    Serve it with `async with server:`, with `await task_group.start(server.serve)`, or with
    `await server.start()`; in every case `await server.stop()` from any task of the same event
    loop stops it (idempotent, bounded, `stopped` emitted once).
    """

    def __init__(
        self,
        *,
        port: int,
        host: str,
        backend: Backend | None,
        access_log: bool,
        health_path: str | None,
        server: ServerKind = "builtin",
        app: McpApp,
        tenants: Tenants,
    ) -> None:
        self.app = app
        self.tenants = tenants
        self._host = host
        self._port = port
        self._backend = backend
        self._access_log = access_log
        self._health_path = health_path
        self._server: ServerKind = server
        self._run: ServingRun | None = None
        self._entered: list[AsyncExitStack] = []  # `async with` blocks, innermost last

    # -- tokens -----------------------------------------------------------------------------------

    def add_token(
        self, token: str, factory: ServerFactory, *, label: str | None = None, plan: str | None = None
    ) -> PerBearerServer:
        """Register `token`: its requests reach the server `factory` builds (sync or async, returning
        an SDK `Server` or `MCPServer`), built on first use and shared by the token's sessions.
        `plan` names its rate limits (the `rate_limits` option's `plans`). Raises `ValueError` if
        the token is already registered (use `update_token`) or the label is taken or malformed."""
        self.tenants.add(token, factory, label=label, plan=plan)
        return self

    def remove_token(
        self, token: str, *, policy: SessionPolicy = "close", drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    ) -> PerBearerServer:
        """Unregister `token`: its requests get 401 from now on; its live sessions end now (`close`)
        or when idle, at most after `drain_timeout` seconds (`drain`). Raises `KeyError` for a token
        that is not registered (the message names no token)."""
        if not self.tenants.remove(token, policy=policy, drain_timeout=drain_timeout):
            raise KeyError("token is not registered")
        return self

    def update_token(
        self,
        token: str,
        factory: ServerFactory,
        *,
        policy: SessionPolicy = "drain",
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
    ) -> PerBearerServer:
        """Replace `token`'s factory: new sessions get the new server; live ones keep the old server
        until they end, at most `drain_timeout` seconds (`drain`), or end now (`close`). Raises
        `KeyError` for a token that is not registered (the message names no token)."""
        if not self.tenants.update(token, factory, policy=policy, drain_timeout=drain_timeout):
            raise KeyError("token is not registered")
        return self

    def has_token(self, token: str) -> bool:
        return self.tenants.has(token)

    def token_ids(self) -> list[str]:
        """The registered tenants' ids (labels or digest prefixes), never the tokens."""
        return self.tenants.ids()

    # -- events and state -------------------------------------------------------------------------

    def on(self, event_name: EventName, listener: Listener) -> Callable[[], None]:
        """Subscribe to an event of the app's hub (`"started"`, `"session_created"`, ...); returns a
        function that unsubscribes. Listener semantics are `McpApp.on`'s."""
        return self.app.on(event_name, listener)

    @property
    def is_running(self) -> bool:
        """Serving, and no stop requested."""
        run = self._run
        return run is not None and run.info is not None and not run.stop_requested.is_set()

    def server_info(self) -> ServerInfo | None:
        """Where the server listens while it runs; None before it started and once a stop is requested."""
        run = self._run
        return run.info if self.is_running and run is not None else None

    def stats(self) -> dict[str, Any]:
        """The app's counters (`McpApp.stats()`): tenants by id, never by token."""
        return self.app.stats()

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> ServerInfo:
        """Start serving in a task of its own; returns once connections are accepted. Emits
        `started` with the real port. Any task of this event loop may then `stop()` it.

        Raises `ConfigurationError` if already running, if hypercorn (or trio) is missing, or if
        `backend` names another library than the one running; `OSError` if the port is taken.
        An error that ends the server later is logged on `asgi_mcp.server`, and `stopped` emitted.
        """
        return (await self._start(awaited=False)).info

    async def serve(self, *, task_status: anyio.abc.TaskStatus[ServerInfo] = anyio.TASK_STATUS_IGNORED) -> None:
        """The structured form, `info = await task_group.start(server.serve)`: serves until
        `stop()` (from any task) and returns once stopped. Cancelling it stops the server as
        `stop()` does (bounded, not abruptly). An error that ends the server is raised here.
        Raises as `start()` does."""
        started = await self._start(awaited=True)
        task_status.started(started.info)
        run = started.run
        try:
            await run.stopped.wait()
        finally:
            with anyio.CancelScope(shield=True):  # bounded: see stop()
                await self._stop(run)
        if run.failure is not None:
            raise run.failure

    async def stop(self) -> None:
        """Stop serving (a no-op when not running), from any task of the event loop that serves.
        New requests get 503, every session ends (open SSE streams close), then the socket closes;
        bounded by the app's `shutdown_timeout` plus a second. Returns once `stopped` was emitted
        (once, however many tasks call `stop()`). Tokens stay registered: it may serve again.
        Raises `ConfigurationError` when called from another event loop or thread."""
        run = self._run
        if run is not None:
            await self._stop(run)

    async def __aenter__(self) -> PerBearerServer:
        # A task group of the caller's: an error that ends the server cancels the block.
        stack = AsyncExitStack()
        task_group = await stack.enter_async_context(anyio.create_task_group())
        try:
            await task_group.start(self.serve)
        except BaseException:
            await stack.aclose()
            raise
        self._entered.append(stack)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        stack = self._entered.pop()
        try:
            await self.stop()
        finally:
            await stack.__aexit__(exc_type, exc, tb)

    def __repr__(self) -> str:
        info = self.server_info()
        where = info.url if info is not None else "stopped"
        return f"PerBearerServer({where}, tenants={self.tenants.ids()!r})"

    # -- the serving task -------------------------------------------------------------------------

    async def _start(self, *, awaited: bool) -> StartedRun:
        if self._run is not None:
            raise ConfigurationError("the server is already running")
        backend = running_backend()
        if self._backend is not None and self._backend != backend:
            raise ConfigurationError(f"backend={self._backend!r}, but this task runs on {backend}")
        runner_class = require_server(self._server, backend)
        self._run = run = ServingRun(current_event_loop(), awaited=awaited)
        spawn_detached(
            partial(self._serve_detached, run, runner_class), name=f"asgi_mcp server on {self._host}:{self._port}"
        )
        try:
            await run.ready.wait()
        except BaseException:
            run.stop_requested.set()  # the caller gave up waiting: leave no server behind
            raise
        if run.info is None:
            assert run.failure is not None
            raise run.failure
        return StartedRun(run, run.info)

    async def _stop(self, run: ServingRun) -> None:
        if current_event_loop() is not run.loop:
            raise ConfigurationError(_FOREIGN_LOOP)
        run.stop_requested.set()
        await run.stopped.wait()

    async def _serve_detached(self, run: ServingRun, runner_class: type[HypercornServer]) -> None:
        """The serving task: the only one that enters the server's task group and cancel scopes."""
        try:
            await self._serve(run, runner_class)
        except Exception as exc:  # no parent task: hand it to the starter, to `serve()`, or to the log
            run.failure = exc
            if run.ready.is_set() and not run.awaited:
                _logger.error("the server stopped on an error", exc_info=exc)
        finally:
            run.ready.set()

    async def _serve(self, run: ServingRun, runner_class: type[HypercornServer]) -> None:
        runner = runner_class(
            self.app, host=self._host, port=self._port, health_path=self._health_path, access_log=self._access_log
        )
        startup_failure: Exception | None = None
        try:
            async with anyio.create_task_group() as task_group:
                try:
                    port: int = await task_group.start(runner.run)
                except Exception as exc:
                    startup_failure = exc  # raised below as is, not in an exception group
                else:
                    run.info = info = self._info_of(port)
                    self.app.events.emit(
                        Started(
                            url=info.url, host=info.host, port=port, endpoint=info.endpoint, started_at=info.started_at
                        )
                    )
                    run.ready.set()
                    await run.stop_requested.wait()
                    runner.shutdown()
            if startup_failure is not None:
                raise startup_failure
        finally:
            run.stop_requested.set()  # not running any more, whatever ended it
            if run.info is not None:
                now = time.time()
                self.app.events.emit(Stopped(stopped_at=now, uptime=now - run.info.started_at))
                await deliver_remaining(self.app.events)
            self._run = None  # only now may it start again: the delivery above runs the app's hub
            run.stopped.set()

    def _info_of(self, port: int) -> ServerInfo:
        suffix = "/" if self.app.config.path == "/" else self.app.config.path
        return ServerInfo(
            url=f"http://{url_host(self._host)}:{port}{suffix}",
            host=self._host,
            port=port,
            endpoint=self.app.config.path,
            started_at=time.time(),
        )


def create_per_bearer_server(
    *,
    port: int = 0,
    host: str = "127.0.0.1",
    endpoint: str = "/mcp",
    backend: Backend | None = None,
    logging: bool = False,
    json_response: bool = False,
    event_store: EventStore | None = None,
    health_path: str | None = None,
    server: ServerKind = "builtin",
    **app_options: Any,
) -> PerBearerServer:
    """A per-bearer-token MCP server, not yet started (`start()` or `async with`).

    Args:
        port: TCP port; 0 picks a free one (`start()` returns the real one).
        host: interface to bind; the default serves this machine only.
        endpoint: the MCP endpoint path.
        backend: "asyncio" or "trio" to insist on one; None serves on whichever runs `start()`.
        logging: write an access log line per request to the `asgi_mcp.access` logger (client
            address, method, path without query, status, size; no header, query string or
            environment in the line nor in the record). The library attaches no handler:
            configure logging to see it.
        json_response: as `McpApp`'s.
        event_store: as `McpApp`'s.
        health_path: a path answering GET with 200 "ok" (text/plain) and nothing else, no token
            needed, for load-balancer probes. Off by default.
        server: "builtin" (the built-in HTTP/1.1 server, the default) or "hypercorn" (for HTTP/2 or
            what else hypercorn adds).
        **app_options: further `McpApp` options (`session_idle_timeout`, `max_sessions`,
            `shutdown_timeout`, `allowed_hosts`, `authorization_servers`, ...).

    Needs the `server` extra (h11 or hypercorn, and trio for Trio): `ConfigurationError` names it
    otherwise.
    """
    reserved = sorted(_RESERVED.intersection(app_options))
    if reserved:
        raise ConfigurationError(f"create_per_bearer_server sets {', '.join(reserved)} itself")
    if backend not in (None, "asyncio", "trio"):
        raise ConfigurationError("backend must be 'asyncio', 'trio' or None")
    if not 0 <= port <= 65535:
        raise ConfigurationError("port must be 0-65535")
    require_server(server, backend or "asyncio")
    tenants = Tenants()
    app = McpApp(tenants=tenants, path=endpoint, json_response=json_response, event_store=event_store, **app_options)
    if health_path is not None and (
        not health_path.startswith("/") or health_path.rstrip("/") in (app.config.path.rstrip("/"), "")
    ):
        raise ConfigurationError("health_path must be an absolute path other than '/' and the endpoint")
    return PerBearerServer(
        port=port,
        host=host,
        backend=backend,
        access_log=logging,
        health_path=health_path,
        server=server,
        app=app,
        tenants=tenants,
    )
