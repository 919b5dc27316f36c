"""The one-call multi-tenant server: an `McpApp` over `Tenants`, served by hypercorn in-process.

    server = create_per_bearer_server(port=0).add_token(token, factory, label="alice")
    async with server:                     # or: info = await server.start() ... await server.stop()
        print(server.server_info().url)    # the real port, even for port=0

It owns everything it runs: the app's lifespan and hypercorn run in a task group of the
`PerBearerServer`, held open between `start()` and `stop()`. It never installs process signal
handlers, never serves anything about tenants without a token, and `stop()` is bounded even while
clients hold SSE streams open (see `_hypercorn`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

import anyio
from mcp.server.streamable_http import EventStore

from .._app.app import McpApp
from .._core.errors import ConfigurationError
from .._ops.lifecycle import EventHub, EventName, Listener, Started, Stopped
from .._tenancy.tenants import DEFAULT_DRAIN_TIMEOUT, ServerFactory, SessionPolicy, Tenants
from .hypercorn import Backend, HypercornServer, require_hypercorn, running_backend, url_host

__all__ = ["PerBearerServer", "ServerInfo", "create_per_bearer_server"]

# McpApp options the one-call server decides itself.
_RESERVED: Final = frozenset({"server", "tenants", "token_verifier", "path"})
# How long stop() waits for listeners to take the `stopped` event.
_STOPPED_DELIVERY_TIMEOUT: Final = 5.0


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """Where a started server listens. `port` is the bound port (never 0); `url` includes the endpoint."""

    url: str
    host: str
    port: int
    endpoint: str
    started_at: float  # seconds since the epoch (time.time())


class PerBearerServer:
    """An MCP server where each bearer token reaches its own MCP server. Build it with
    `create_per_bearer_server`.

    Token methods are synchronous, chainable and usable before `start()` and while serving. Tokens
    are kept as SHA-256 digests; stats, events and logs know a tenant only by its id (the `label`
    given to `add_token`, else a digest prefix).

    `start()` and `stop()` must be called from the same task, and not from inside a cancel scope
    (`anyio.fail_after`, ...) that is left in between: the server's task group stays open between
    them, in that task. `async with server:` does both. If the server's own task fails, that task
    group cancels the task that started it, as any task group does.
    """

    def __init__(
        self,
        *,
        port: int,
        host: str,
        backend: Backend | None,
        access_log: bool,
        health_path: str | None,
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
        self._stack: AsyncExitStack | None = None
        self._runner: HypercornServer | None = None
        self._info: ServerInfo | None = None

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
        return self._info is not None

    def server_info(self) -> ServerInfo | None:
        """Where the server listens while it runs; None before `start()` and after `stop()`."""
        return self._info

    def stats(self) -> dict[str, Any]:
        """The app's counters (`McpApp.stats()`): tenants by id, never by token."""
        return self.app.stats()

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> ServerInfo:
        """Start serving; returns once connections are accepted. Emits `started` with the real port.

        Raises `ConfigurationError` if already running, if hypercorn (or trio) is missing, or if
        `backend` names another library than the one running; `OSError` if the port is taken.
        """
        if self._stack is not None:
            raise ConfigurationError("the server is already running")
        backend = running_backend()
        if self._backend is not None and self._backend != backend:
            raise ConfigurationError(f"backend={self._backend!r}, but this task runs on {backend}")
        require_hypercorn(backend)
        runner = HypercornServer(
            self.app, host=self._host, port=self._port, health_path=self._health_path, access_log=self._access_log
        )
        stack = AsyncExitStack()
        task_group = await stack.enter_async_context(anyio.create_task_group())
        try:
            port: int = await task_group.start(runner.run)
        except BaseException:
            await stack.aclose()
            raise
        self._stack, self._runner = stack, runner
        suffix = "/" if self.app.path == "/" else self.app.path
        info = ServerInfo(
            url=f"http://{url_host(self._host)}:{port}{suffix}",
            host=self._host,
            port=port,
            endpoint=self.app.path,
            started_at=time.time(),
        )
        self._info = info
        self.app.events.emit(
            Started(url=info.url, host=info.host, port=info.port, endpoint=info.endpoint, started_at=info.started_at)
        )
        return info

    async def stop(self) -> None:
        """Stop serving (a no-op when not running). New requests get 503, every session ends (open
        SSE streams close), then the socket closes; bounded by the app's `shutdown_timeout` plus a
        second. Emits `stopped`. Tokens stay registered: `start()` may run again."""
        stack, runner, info = self._stack, self._runner, self._info
        if stack is None or runner is None:
            return
        self._stack = self._runner = self._info = None
        runner.shutdown()
        try:
            await stack.aclose()
        finally:
            now = time.time()
            started = info.started_at if info is not None else now
            self.app.events.emit(Stopped(stopped_at=now, uptime=now - started))
            await _deliver_remaining(self.app.events)

    async def __aenter__(self) -> PerBearerServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def __repr__(self) -> str:
        where = self._info.url if self._info is not None else "stopped"
        return f"PerBearerServer({where}, tenants={self.tenants.ids()!r})"


async def _deliver_remaining(hub: EventHub) -> None:
    """Hand `stopped` (and anything else emitted after the app stopped) to listeners.

    The app's lifespan runs the hub; it has ended, so the hub runs once more, just to drain.
    """
    with anyio.move_on_after(_STOPPED_DELIVERY_TIMEOUT, shield=True):
        async with anyio.create_task_group() as tg:
            await tg.start(hub.run)
            hub.close()


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
    **app_options: Any,
) -> PerBearerServer:
    """A per-bearer-token MCP server, not yet started (`start()` or `async with`).

    Args:
        port: TCP port; 0 picks a free one (`start()` returns the real one).
        host: interface to bind; the default serves this machine only.
        endpoint: the MCP endpoint path.
        backend: "asyncio" or "trio" to insist on one; None serves on whichever runs `start()`.
        logging: write an access log line per request to the `asgi_mcp.access` logger (client
            address, method, path without query, status, size; never headers). The library
            attaches no handler: configure logging to see it.
        json_response: as `McpApp`'s.
        event_store: as `McpApp`'s.
        health_path: a path answering GET with 200 "ok" (text/plain) and nothing else, no token
            needed, for load-balancer probes. Off by default.
        **app_options: further `McpApp` options (`session_idle_timeout`, `max_sessions`,
            `shutdown_timeout`, `allowed_hosts`, `authorization_servers`, ...).

    Needs the `server` extra (hypercorn, and trio for Trio): `ConfigurationError` names it otherwise.
    """
    reserved = sorted(_RESERVED.intersection(app_options))
    if reserved:
        raise ConfigurationError(f"create_per_bearer_server sets {', '.join(reserved)} itself")
    if backend not in (None, "asyncio", "trio"):
        raise ConfigurationError("backend must be 'asyncio', 'trio' or None")
    if not 0 <= port <= 65535:
        raise ConfigurationError("port must be 0-65535")
    require_hypercorn(backend or "asyncio")
    tenants = Tenants()
    app = McpApp(tenants=tenants, path=endpoint, json_response=json_response, event_store=event_store, **app_options)
    if health_path is not None and (
        not health_path.startswith("/") or health_path.rstrip("/") in (app.path.rstrip("/"), "")
    ):
        raise ConfigurationError("health_path must be an absolute path other than '/' and the endpoint")
    return PerBearerServer(
        port=port,
        host=host,
        backend=backend,
        access_log=logging,
        health_path=health_path,
        app=app,
        tenants=tenants,
    )
