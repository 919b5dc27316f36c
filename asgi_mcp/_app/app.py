"""`McpApp`: the ASGI application. The one thin shell around the protocol pieces.

Per request: route by path and method, check Host/Origin, pick the era from `MCP-Protocol-Version`,
read the body under its limit, classify it, and hand it to the legacy or modern endpoint. Every
exception meets one boundary here: `ProtocolError` becomes its status and JSON-RPC error, anything
else a generic 500 with nothing internal in the body.
"""

from __future__ import annotations

import gc
import logging
import time
import weakref
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Final, cast
from urllib.parse import urlsplit

import anyio
import anyio.abc
from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.streamable_http import EventStore

from .._auth.bearer import (
    AuthenticationError,
    BearerAuth,
    TokenVerifier,
    challenge,
    metadata_paths,
    parse_bearer,
    principal_key,
    protected_resource_metadata,
)
from .._core.asgi import ClientGone, HttpRequest, Receive, Scope, Send, read_body, send_empty, send_error, send_json
from .._core.cors import CorsPolicy
from .._core.errors import INTERNAL_ERROR, SERVER_BUSY, ConfigurationError, ProtocolError, SecurityRefusal
from .._core.http import (
    Headers,
    accepts,
    endpoint_matches,
    era_of,
    is_json_content_type,
    is_visible_ascii,
    method_not_allowed,
    normalize_endpoint,
)
from .._core.jsonrpc import parse_body
from .._core.origin import OriginPolicy
from .._core.session_table import SessionEntry, SessionTable
from .._io.loop import Loop
from .._io.streams import KeepAlive
from .._io.watch import LateWatch
from .._kernel.dispatch import RequestObserver
from .._kernel.hosting import ServerHost, as_lowlevel_server
from .._legacy.endpoint import LegacyEndpoint, LegacySession, Principal
from .._modern.endpoint import ModernEndpoint
from .._ops.audit import AuditPolicy
from .._ops.lifecycle import EventHub, EventName, Listener, SessionCreated, SessionEnded, ToolCalled, TransportError
from .._ops.telemetry import TENANT_ATTRIBUTE, Metrics, current_tenant
from .._ports.replay import EventLog
from .._tenancy.isolation import redacted
from .._tenancy.limits import RateLimits
from .._tenancy.servers import TenantRemoved, TenantServers
from .._tenancy.tenants import Tenants
from .operations import Credential, Operations

__all__ = ["McpApp"]

logger = logging.getLogger("asgi_mcp")
http_logger = logging.getLogger("asgi_mcp.http")

DEFAULT_MAX_BODY: Final = 4 * 1024 * 1024
# How soon a modern exchange still running gets a watcher (a leaving client cancels it within two).
WATCH_PERIOD: Final = 0.05
NOT_RUNNING_MESSAGE: Final = (
    "asgi_mcp.McpApp is not running. Serve it as the top-level ASGI app (the server runs its lifespan), "
    "or, when it is mounted inside another framework, enter `async with mcp_app.lifespan_context():` "
    "in the host application's lifespan."
)


class _Runtime:
    """What exists only while the app runs: the task group, the session table, the endpoints."""

    def __init__(self, app: McpApp, task_group: anyio.abc.TaskGroup) -> None:
        self.app = app
        self.task_group = task_group
        self.closing = False
        self.started = False  # startup completed (server lifespan entered): ready for traffic
        self.started_at = time.time()
        self.wake_reaper = anyio.Event()
        self.reaper_wakes_at = float("inf")
        self.keepalive = KeepAlive(app.keepalive_interval)
        self.watch = LateWatch(min(WATCH_PERIOD, app.keepalive_interval / 4))
        self.loop = Loop.current()
        self.table: SessionTable[LegacySession] = SessionTable(
            max_sessions=app.max_sessions,
            idle_timeout=app.session_idle_timeout,
            max_per_tenant=app.max_sessions_per_tenant,
        )
        hub, ops = app.events, app.operations
        self.legacy = LegacyEndpoint(
            table=self.table,
            task_group=task_group,
            json_response=app.json_response,
            events=EventLog(app.event_store) if app.event_store is not None else None,
            retry_ms=app.retry_interval,
            keepalive=self.keepalive,
            loop=self.loop,
            observer_for=lambda entry: _tool_observer(
                hub, entry.tenant_id, entry.session_id, ops, _legacy_client(weakref.ref(entry.value))
            ),
            on_created=self._session_created,
            on_ended=self._session_ended,
            wake=self.wake,
        )
        self.modern = ModernEndpoint(
            json_response=app.json_response,
            keepalive=app.keepalive_interval,
            tool_schema_ttl=app.tool_schema_ttl,
            loop=self.loop,
            watch=self.watch,
        )

    def _session_created(self, entry: SessionEntry[LegacySession]) -> None:
        if self.app.operations is not None:
            self.app.operations.session_opened(entry.session_id)
        self.app.events.emit(
            SessionCreated(
                session_id=entry.session_id,
                tenant_id=entry.tenant_id,
                server_name=entry.value.host.name,
                protocol_version=entry.value.protocol_version,
                created_at=time.time(),
            )
        )

    def _session_ended(self, entry: SessionEntry[LegacySession], reason: str) -> None:
        if self.app.operations is not None:
            self.app.operations.session_ended(entry.session_id)
        duration = anyio.current_time() - entry.created_at
        self.app.events.emit(
            SessionEnded(
                session_id=entry.session_id,
                tenant_id=entry.tenant_id,
                server_name=entry.value.host.name,
                reason=reason,
                duration=duration,
                ended_at=time.time(),
            )
        )
        attributes = {TENANT_ATTRIBUTE: entry.tenant_id} if entry.tenant_id is not None else {}
        self.app.metrics.session_duration.record(duration, attributes)

    def wake(self, deadline: float | None = None) -> None:
        """Wake the reaper, unless `deadline` is no earlier than the moment it wakes anyway."""
        if deadline is None or deadline < self.reaper_wakes_at:
            self.wake_reaper.set()

    async def reap_forever(self) -> None:
        """End idle and drained sessions when their deadline passes; sleeps until the earliest one."""
        while not self.closing:
            deadline = self.table.next_deadline()
            now = anyio.current_time()
            self.reaper_wakes_at = now + 60 if deadline is None else deadline
            with anyio.move_on_after(max(0.0, self.reaper_wakes_at - now)):
                await self.wake_reaper.wait()
            self.wake_reaper = anyio.Event()
            self.legacy.reap(anyio.current_time())


def _tool_observer(
    hub: EventHub,
    tenant_id: str | None,
    session_id: str | None,
    ops: Operations | None,
    client: Callable[[], Mapping[str, Any] | None] | None = None,
) -> RequestObserver:
    """Per `tools/call` answer: the audit record and `tool_called`. `client` reads the session's
    client info (legacy); without it, a 2026-07-28 request carries its own in `_meta`."""

    def observe(method: str, params: Mapping[str, Any] | None, started: float, outcome: dict[str, Any]) -> None:
        if method != "tools/call":
            return
        if ops is not None and ops.auditor.active:  # the client info is read only for a record
            info = client() if client is not None else _modern_client(params)
            ops.tool_called(tenant_id, session_id, info, params, outcome, time.perf_counter() - started)
        if not hub.has_listeners("tool_called"):
            return
        error: dict[str, Any] | None = outcome.get("error")
        result: dict[str, Any] | None = outcome.get("result")
        tool_failed = result is not None and bool(result.get("isError"))
        hub.emit(
            ToolCalled(
                tool_name=str((params or {}).get("name", "")),
                tenant_id=tenant_id,
                session_id=session_id,
                duration=time.perf_counter() - started,
                success=error is None and not tool_failed,
                error=str(error.get("message")) if error is not None else ("tool_error" if tool_failed else None),
            )
        )

    return observe


def _legacy_client(session_ref: weakref.ref[LegacySession]) -> Callable[[], Mapping[str, Any] | None]:
    """Reads the session's client info from `initialize`. Weakly: the session's dispatcher holds the
    observer, and an ended session must leave no reference cycle behind."""

    def client() -> Mapping[str, Any] | None:
        session = session_ref()
        params = session.connection.client_params if session is not None else None
        return params.client_info.model_dump() if params is not None else None

    return client


def _modern_client(params: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    meta: Any = params.get("_meta") if params is not None else None
    if not isinstance(meta, dict):
        return None
    info: Any = cast("dict[str, Any]", meta).get("io.modelcontextprotocol/clientInfo")
    return cast("dict[str, Any]", info) if isinstance(info, dict) else None


class McpApp:
    """An ASGI 3 application serving MCP over Streamable HTTP, both protocol eras.

    Args:
        server: an `mcp.server.Server` (low-level) or an `mcp.server.MCPServer`, served to every
            caller. Give either this or `tenants`.
        tenants: a token registry (`Tenants`): each bearer token reaches its own server, built by
            its factory; unknown tokens get 401. Tokens can be added, removed and updated while
            the app serves requests.
        token_verifier: verifies bearer tokens for a single `server` (the SDK's `TokenVerifier`
            protocol: `async verify_token(token) -> AccessToken | None`).
        required_scopes: scopes every request needs; 403 `insufficient_scope` otherwise.
        resource_server_url: the endpoint's public URL (behind a proxy, the URL clients use). Names
            the resource in RFC 9728 metadata and is the audience checked by `validate_resource`.
        authorization_servers: issuer URLs advertised in RFC 9728 metadata; with them, the metadata
            is served and 401 challenges carry `resource_metadata`.
        validate_resource: reject tokens whose `resource` (RFC 8707 audience) is not this endpoint.
        path: the endpoint path; the bare path and a trailing slash are both served, never
            redirected. When mounted, it is relative to the mount point (`root_path`).
        json_response: answer legacy-era requests with one JSON body instead of an SSE stream. Server-to-
            client requests and request-scoped notifications need SSE and are unavailable then.
        event_store: enables SSE resumability (`Last-Event-ID`) for legacy sessions. Any SDK
            `EventStore` works; `InMemoryEventStore` is a bounded process-local one.
        retry_interval: milliseconds clients wait before reconnecting to a stream closed for
            polling (the SSE `retry` field of the priming event).
        session_idle_timeout: seconds a legacy session may sit with nothing in flight (an open GET
            stream counts as in flight); None disables expiry.
        max_sessions: live legacy sessions at most; beyond it `initialize` gets 503.
        max_body_size: bytes a request body may have (counted as received, chunked or not); 413 beyond.
        allowed_hosts: `Host` values answered (DNS-rebinding allow-list, see `OriginPolicy`); None
            keeps the safe default (loopback binds answer only loopback names).
        allowed_origins: `Origin` values answered (see `OriginPolicy`); None keeps the safe default
            (loopback binds accept only loopback origins, other binds only same-origin requests).
        keepalive_interval: seconds of silence after which an SSE stream gets a comment line. A
            legacy SSE answer whose client accepts nothing for that long is abandoned (the handler
            runs on; its messages stay in the event store for a reconnection).
        shutdown_timeout: seconds shutdown waits for sessions and server lifespans to finish.
        tool_schema_ttl: seconds a server's tool schemas are cached for `Mcp-Param-*` validation.
        cors_origins: origins browsers may call the endpoint from (`"*"` for any); preflights are
            answered and every answer, errors included, carries the CORS headers. These origins
            also pass the DNS-rebinding Origin check.
        gc_freeze: call `gc.freeze()` once started, so full garbage collections stop rescanning the
            objects built at startup (modules, servers); they are what makes tail latency spike.
            Process-wide: turn it on when this app owns the process.
        health_path: serve liveness ("ok") at this path, outside authentication; None: not served.
        ready_path: serve readiness at this path: 200 while running, 503 before startup and
            during shutdown; None: not served. Neither route reveals anything about tenants.
        rate_limits: per-tenant token buckets (`RateLimits`) on requests, `tools/call`,
            `completion/complete` and single tools; over a limit, 429 with `Retry-After`.
        max_sessions_per_tenant: live legacy sessions one tenant may hold (None: only
            `max_sessions` applies); beyond it `initialize` gets 429 with `Retry-After`.
        audit: what audit records may carry beyond who, what and how (`AuditPolicy`); records
            go to `audit` listeners and the `asgi_mcp.audit` logger either way.
        expose_raw_token: let tool code read the caller's bearer token (`get_access_token().token`).
            Off by default: tools see a digest prefix in its place, with the tenant (client id),
            scopes and expiry, since passing a client's token on to other services is forbidden.

    Lifespan: served as the top-level app, the ASGI `lifespan` protocol starts and stops it. Mounted
    inside a framework that does not run a sub-application's lifespan (Starlette's `Mount`), enter
    `async with app.lifespan_context():` in the host's lifespan.
    """

    def __init__(
        self,
        server: Any = None,
        *,
        tenants: Tenants | None = None,
        token_verifier: TokenVerifier | None = None,
        required_scopes: Sequence[str] = (),
        resource_server_url: str | None = None,
        authorization_servers: Sequence[str] = (),
        validate_resource: bool = False,
        path: str = "/mcp",
        json_response: bool = False,
        event_store: EventStore | None = None,
        retry_interval: int | None = None,
        session_idle_timeout: float | None = 1800.0,
        max_sessions: int = 10_000,
        max_body_size: int = DEFAULT_MAX_BODY,
        allowed_hosts: Sequence[str] | None = None,
        allowed_origins: Sequence[str] | None = None,
        keepalive_interval: float = 15.0,
        shutdown_timeout: float = 5.0,
        tool_schema_ttl: float = 5.0,
        cors_origins: Sequence[str] | None = None,
        health_path: str | None = None,
        ready_path: str | None = None,
        gc_freeze: bool = False,
        rate_limits: RateLimits | None = None,
        max_sessions_per_tenant: int | None = None,
        audit: AuditPolicy | None = None,
        expose_raw_token: bool = False,
    ) -> None:
        if (server is None) == (tenants is None):
            raise ConfigurationError("give exactly one of `server` (one MCP server) and `tenants` (one per token)")
        if tenants is not None and token_verifier is not None:
            raise ConfigurationError("`tenants` authenticates by its own tokens; it takes no `token_verifier`")
        if validate_resource and resource_server_url is None:
            raise ConfigurationError("validate_resource needs resource_server_url (the audience to check)")
        if max_body_size < 1:
            raise ConfigurationError("max_body_size must be positive")
        if max_sessions < 1:
            raise ConfigurationError("max_sessions must be at least 1")
        if max_sessions_per_tenant is not None and max_sessions_per_tenant < 1:
            raise ConfigurationError("max_sessions_per_tenant must be at least 1, or None")
        if session_idle_timeout is not None and session_idle_timeout <= 0:
            raise ConfigurationError("session_idle_timeout must be positive, or None")
        if retry_interval is not None and retry_interval < 0:
            raise ConfigurationError("retry_interval must not be negative")
        if keepalive_interval <= 0 or shutdown_timeout < 0 or tool_schema_ttl < 0:
            raise ConfigurationError(
                "keepalive_interval must be positive; shutdown_timeout and tool_schema_ttl not negative"
            )
        self.events = EventHub()
        self.tenants = tenants
        if tenants is not None and not tenants.has_clock:
            tenants.clock = time.time  # the registry is sans-IO: its wall clock comes from here
        self._tenant_servers = TenantServers(self.events) if tenants is not None else None
        if tenants is not None and self._tenant_servers is not None:
            tenants.subscribe(self._tenant_servers)
        self.server = as_lowlevel_server(server) if server is not None else None
        self.host: ServerHost | None = ServerHost(self.server) if self.server is not None else None
        self.path = normalize_endpoint(path)
        self.json_response = json_response
        self.event_store = event_store
        self.retry_interval = retry_interval
        self.session_idle_timeout = session_idle_timeout
        self.max_sessions = max_sessions
        self.max_sessions_per_tenant = max_sessions_per_tenant
        self.expose_raw_token = expose_raw_token
        self.max_body_size = max_body_size
        self.keepalive_interval = keepalive_interval
        self.shutdown_timeout = shutdown_timeout
        self.tool_schema_ttl = tool_schema_ttl
        self.cors = CorsPolicy(cors_origins) if cors_origins else None
        self.origin_policy = OriginPolicy(allowed_hosts, allowed_origins, cors_origins=cors_origins or ())
        self.health_path = normalize_endpoint(health_path) if health_path is not None else None
        self.ready_path = normalize_endpoint(ready_path) if ready_path is not None else None
        self.gc_freeze = gc_freeze
        self.metrics = Metrics()
        self.metrics.observe(self._sessions_by_tenant, self._open_streams)
        self.resource_server_url = resource_server_url
        self.authorization_servers = tuple(authorization_servers)
        self.required_scopes = tuple(required_scopes)
        self.auth = (
            BearerAuth(
                token_verifier,
                required_scopes=required_scopes,
                resource_url=resource_server_url,
                validate_resource=validate_resource,
            )
            if token_verifier is not None
            else None
        )
        self._metadata_paths = metadata_paths(self.path)
        self.operations = Operations.needed(
            self.events, tenants, self._tenant_servers, rate_limits, audit, verified=token_verifier is not None
        )
        self._runtime: _Runtime | None = None
        self._not_running_logged = False
        self._anonymous = Principal(owner="", tenant_id=None, host=self._get_host)

    # -- public surface ---------------------------------------------------------------------------

    def on(self, event_name: EventName, listener: Listener) -> Callable[[], None]:
        """Subscribe to an event (`"session_created"`, `"tool_called"`, ...); returns an unsubscribe function.

        Listeners may be sync or async; they run off the request path, in order per listener, and a
        failing or slow one never fails or slows a request.
        """
        return self.events.on(event_name, listener)

    @property
    def running(self) -> bool:
        return self._runtime is not None and self._runtime.started and not self._runtime.closing

    def stats(self) -> dict[str, Any]:
        """Counters cheap enough for every health probe. Tenants appear by id, never by token."""
        runtime = self._runtime
        per_tenant = runtime.table.per_tenant() if runtime is not None else {}
        return {
            "running": self.running,
            "registered_tokens": len(self.tenants) if self.tenants is not None else 0,
            "built_servers": (
                self._tenant_servers.built if self._tenant_servers is not None else int(self.host is not None)
            ),
            "active_sessions": len(runtime.table) if runtime is not None else 0,
            "sessions_per_tenant": {tenant: count for tenant, count in per_tenant.items() if tenant is not None},
            "open_streams": runtime.legacy.open_streams if runtime is not None else 0,
            "uptime": time.time() - runtime.started_at if runtime is not None else 0.0,
            **(
                self.operations.stats()
                if self.operations is not None
                else {"rate_limited": 0, "tokens_rotated": 0, "tokens_expired": 0}
            ),
        }

    def _sessions_by_tenant(self) -> list[tuple[str | None, int]]:
        runtime = self._runtime
        return list(runtime.table.per_tenant().items()) if runtime is not None else []

    def _open_streams(self) -> int:
        runtime = self._runtime
        return runtime.legacy.open_streams if runtime is not None else 0

    # -- lifespan ---------------------------------------------------------------------------------

    @asynccontextmanager
    async def lifespan_context(self) -> AsyncGenerator[McpApp, None]:
        """Run the app: start the server's lifespan, serve sessions; on exit, end them all.

        Shutdown closes every stream and session and waits at most `shutdown_timeout` seconds for
        running handlers, clean-ups and server lifespans to finish before cancelling them. Exiting twice, or a
        second ASGI shutdown, is harmless.
        """
        if self._runtime is not None:
            raise ConfigurationError("McpApp is already running; an app instance runs once at a time")
        try:
            async with anyio.create_task_group() as tg:
                runtime = _Runtime(self, tg)
                self._runtime = runtime
                try:
                    await tg.start(self.events.run)
                    if self._tenant_servers is not None:
                        self._tenant_servers.attach(tg, runtime.legacy)
                    if self.host is not None:
                        await self.host.start(tg)
                    tg.start_soon(runtime.reap_forever)
                    if self.operations is not None:
                        self.operations.attach(runtime.legacy.end_session)
                        tg.start_soon(self.operations.expire_forever)
                    tg.start_soon(runtime.keepalive.run, tg)
                    tg.start_soon(runtime.watch.run)
                    runtime.started = True
                    if self.gc_freeze:
                        gc.freeze()
                    yield self
                finally:
                    self._shutdown(runtime)
        finally:
            # Cleared only once everything stopped: requests during shutdown get 503, not "not running".
            self._runtime = None

    def _shutdown(self, runtime: _Runtime) -> None:
        if runtime.closing:
            return
        runtime.closing = True
        runtime.keepalive.stop()
        runtime.watch.stop()
        runtime.legacy.end_all("shutdown")
        if self.operations is not None:
            self.operations.detach()
        if self._tenant_servers is not None:
            self._tenant_servers.detach()
        if self.host is not None:
            self.host.stop()
            # A fresh host for the next run: a lifespan is entered once per host.
            self.host = ServerHost(self.host.server)
        # Everything still running gets `shutdown_timeout` to finish, then is cancelled.
        runtime.task_group.cancel_scope.deadline = anyio.current_time() + self.shutdown_timeout
        runtime.wake()
        # Listeners get the events queued so far (session_ended of every session above), then stop.
        self.events.close()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        async with AsyncExitStack() as stack:
            message = await receive()
            if message["type"] != "lifespan.startup":
                return
            try:
                await stack.enter_async_context(self.lifespan_context())
            except Exception as exc:
                logger.exception("asgi_mcp startup failed")
                # Servers print this message; the run's task group wraps the cause in an exception
                # group whose own text ("unhandled errors in a TaskGroup") says nothing.
                await send({"type": "lifespan.startup.failed", "message": str(_sole_cause(exc))})
                return
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})

    async def _get_host(self) -> ServerHost:
        assert self.host is not None
        return self.host

    # -- ASGI -------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1000})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, root_path = scope["path"], scope.get("root_path", "")
        headers = Headers(scope["headers"])
        if self.cors is not None:
            origin = headers.get("origin")
            if origin is not None and self.cors.allows(origin):
                if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
                    await self._preflight(origin, headers, send)
                    return
                send = self.cors.wrap(send, origin)
        if not endpoint_matches(path, root_path, self.path):
            await self._other_path(scope, send)
            return
        responder = _Responder(send)
        request = HttpRequest(scope["method"], path, headers, scope)
        auth_token = tenant_token = None
        attributes: dict[str, str | int] = {"http.request.method": request.method}
        try:
            runtime = self._runtime
            if runtime is None:
                if not self._not_running_logged:
                    self._not_running_logged = True
                    logger.error(NOT_RUNNING_MESSAGE)
                await send_json(send, 500, _error_body(INTERNAL_ERROR, NOT_RUNNING_MESSAGE))
                return
            if runtime.closing:
                raise ProtocolError(503, "Server is shutting down", code=SERVER_BUSY)
            self.origin_policy.check(headers.get("host"), headers.get("origin"), scope.get("server"))
            # Authentication comes before the body is read: unauthenticated callers cost nothing.
            principal, access, credential = await self._authenticate(request)
            if access is not None:
                auth_token = auth_context_var.set(AuthenticatedUser(access))
            if principal.tenant_id is not None:
                tenant_token = current_tenant.set(principal.tenant_id)
                attributes[TENANT_ATTRIBUTE] = principal.tenant_id
            if self.operations is not None and self.operations.guards(principal.tenant_id, access):
                await self._dispatch_held(runtime, request, principal, (access, credential), receive, responder)
            else:
                await self._dispatch(runtime, request, principal, receive, responder)
        except ProtocolError as error:
            _log_refusal(request, error, self.operations)
            if not responder.started:
                await send_error(responder, error)
        except ClientGone:
            pass
        except Exception:
            # The app's one catch-all: a bug, never the client's fault. Nothing internal leaves.
            logger.exception("unexpected error serving %s %s", request.method, request.path)
            if self.events.has_listeners("transport_error"):
                self.events.emit(TransportError(tenant_id=None, session_id=None, error="internal_error"))
            if not responder.started:
                await send_json(responder, 500, _error_body(INTERNAL_ERROR, "Internal server error"))
        finally:
            if auth_token is not None:
                auth_context_var.reset(auth_token)
            if tenant_token is not None:
                current_tenant.reset(tenant_token)
            attributes["http.response.status_code"] = responder.status
            self.metrics.requests.add(1, attributes)

    async def _dispatch_held(
        self,
        runtime: _Runtime,
        request: HttpRequest,
        principal: Principal,
        authorization: tuple[AccessToken | None, Credential | None],
        receive: Receive,
        responder: _Responder,
    ) -> None:
        """Dispatch under the token's authorization: the exchange ends, and writes nothing more, when
        the token stops working (removed, rotated out, expired)."""
        operations = self.operations
        assert operations is not None
        access, credential = authorization
        with operations.hold(principal.tenant_id, credential, access, responder) as held:
            operations.session_used(request.headers.get("mcp-session-id"), principal.tenant_id)
            await self._dispatch(runtime, request, principal, receive, held.send)
        if held.cut_caught:
            description = "The access token is no longer valid"
            metadata_url = self._resource_metadata_url(request)
            refusal = _tenant_challenge("invalid_token", description, metadata_url, self.required_scopes)
            await _end_cut_response(responder, refusal)

    async def _authenticate(self, request: HttpRequest) -> tuple[Principal, AccessToken | None, Credential | None]:
        """Who is calling, from the Authorization header; raises 401/403 with the right challenge."""
        if self.tenants is None and self.auth is None:
            return self._anonymous, None, None
        metadata_url = self._resource_metadata_url(request)
        token = parse_bearer(request.headers.get("authorization"))
        if self.auth is not None:
            access = await self.auth.authenticate(token, metadata_url)
            principal = Principal(owner=principal_key(access), tenant_id=None, host=self._get_host)
            return principal, access if self.expose_raw_token else redacted(access, None, None), None
        assert self.tenants is not None and self._tenant_servers is not None
        found = self.tenants.credential(token) if token is not None else None
        if found is None:
            error = "invalid_token" if token is not None else None
            description = "The access token is invalid" if token is not None else None
            raise _tenant_challenge(error, description, metadata_url, self.required_scopes)
        tenant, digest, not_after = found
        servers = self._tenant_servers
        access = AccessToken(
            token=(token or "") if self.expose_raw_token else f"sha256:{digest.hex()[:12]}",
            client_id=tenant.tenant_id,
            scopes=list(self.required_scopes),
            expires_at=int(not_after) if not_after is not None else None,
        )

        async def host() -> ServerHost:
            try:
                return await servers.host_for(tenant)
            except TenantRemoved:
                # Removed while this request waited for its server: as if it had come a moment later.
                description = "The access token is invalid"
                raise _tenant_challenge("invalid_token", description, metadata_url, self.required_scopes) from None

        return Principal(owner=tenant.owner, tenant_id=tenant.tenant_id, host=host), access, (digest, not_after)

    def _resource_url(self, scope: Scope) -> str:
        if self.resource_server_url is not None:
            return self.resource_server_url
        headers = Headers(scope["headers"]) if not isinstance(scope.get("headers"), Headers) else scope["headers"]
        host = headers.get("host") or "localhost"
        root = scope.get("root_path", "")
        return f"{scope.get('scheme', 'http')}://{host}{root}{'' if self.path == '/' else self.path}"

    def _resource_metadata_url(self, request: HttpRequest) -> str | None:
        if not self.authorization_servers:
            return None
        try:
            resource = urlsplit(self._resource_url(request.scope))
        except ValueError:  # a Host header no URL can hold ("a]"): advertise nothing rather than fail
            return None
        # The metadata this app serves, seen from outside: under the same prefix as the endpoint
        # (the mount point, `root_path`, or a proxy's prefix in `resource_server_url`).
        suffix = "" if self.path == "/" else self.path
        path = resource.path if suffix else resource.path.rstrip("/")
        prefix = path[: len(path) - len(suffix)] if path.endswith(suffix) else ""
        return f"{resource.scheme}://{resource.netloc}{prefix}{self._metadata_paths[1]}"

    async def _preflight(self, origin: str, headers: Headers, send: Send) -> None:
        assert self.cors is not None
        answer = self.cors.preflight_headers(origin, headers.get("access-control-request-headers"))
        if answer is None:
            reason = "CORS preflight asks for a request header that is not allowed"
            http_logger.info(
                "refused OPTIONS preflight from %s: %s (403)",
                origin,
                reason,
                extra={"status": 403, "reason": reason, "method": "OPTIONS"},
            )
            await send_empty(send, 403)
            return
        await send_empty(send, 204, answer)

    async def _other_path(self, scope: Scope, send: Send) -> None:
        """Health and readiness, RFC 9728 metadata (the root and the path-suffixed form), else 404."""
        path = scope["path"]
        root_path = scope.get("root_path", "")
        if root_path and path.startswith(root_path):
            path = path[len(root_path) :]
        if path in (self.health_path, self.ready_path) and scope["method"] in ("GET", "HEAD"):
            ok = path == self.health_path or self.running
            body = b"ok" if path == self.health_path else (b"ready" if ok else b"not ready")
            headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 200 if ok else 503, "headers": headers})
            await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
            return
        if self.authorization_servers and scope["method"] in ("GET", "HEAD") and path in self._metadata_paths:
            document = protected_resource_metadata(
                self._resource_url(scope), self.authorization_servers, self.required_scopes
            )
            await send_json(send, 200, document, [(b"cache-control", b"public, max-age=3600")])
            return
        await send_json(send, 404, {"error": "not_found"})

    async def _dispatch(
        self, runtime: _Runtime, request: HttpRequest, principal: Principal, receive: Receive, send: Send
    ) -> None:
        headers = request.headers
        method = request.method
        if method != "POST":
            era, _ = era_of(headers.get("mcp-protocol-version"))
        else:
            # The version is checked after the body is read, so the error names the request's id.
            try:
                era, _ = era_of(headers.get("mcp-protocol-version"))
                version_error = None
            except ProtocolError as error:
                era, version_error = "modern", error
            json_ok, sse_ok = accepts(headers.get("accept"))
            if not is_json_content_type(headers.get("content-type")):
                raise ProtocolError(
                    415,
                    "Unsupported Media Type: Content-Type must be application/json",
                    reason="Content-Type is not application/json",
                )
            body = await read_body(receive, self.max_body_size, headers.get("content-length"))
            message = parse_body(body)
            if version_error is not None:
                version_error.request_id = message.id
                raise version_error
            if self.operations is not None and (pending := self.operations.limit(principal, message)) is not None:
                await pending
            if era == "modern":
                host = await principal.host()
                await runtime.modern.post(
                    request,
                    message,
                    host,
                    receive,
                    send,
                    accepts_json=json_ok,
                    accepts_sse=sse_ok,
                    observe=_tool_observer(self.events, principal.tenant_id, None, self.operations),
                )
                return
            if not json_ok:
                raise ProtocolError(
                    406, "Not Acceptable: client must accept application/json", reason="Accept lacks application/json"
                )
            await runtime.legacy.post(request, message, principal, send, accepts_sse=sse_ok)
            return
        if method == "GET":
            if era == "modern":
                raise method_not_allowed("POST")
            if not accepts(headers.get("accept"))[1]:
                raise ProtocolError(
                    406,
                    "Not Acceptable: GET requires Accept: text/event-stream",
                    reason="GET without text/event-stream",
                )
            await runtime.legacy.get(request, principal, receive, send)
        elif method == "DELETE":
            if era == "modern":
                raise method_not_allowed("POST")
            await runtime.legacy.delete(request, principal, send)
        else:
            raise method_not_allowed("GET, POST, DELETE")


async def _end_cut_response(responder: _Responder, refusal: ProtocolError) -> None:
    """An exchange cut because its token stopped working: end the response with no more content
    (the 401 if nothing was sent yet), so the client's server closes it cleanly."""
    try:
        if not responder.started:
            await send_error(responder, refusal)
        elif not responder.finished:
            await responder({"type": "http.response.body", "body": b"", "more_body": False})
    except ClientGone:
        pass


class _Responder:
    """Wraps ASGI `send`: remembers whether the response started and finished, and turns a send on
    a closed connection (`OSError`, ASGI 2.4) into `ClientGone`."""

    __slots__ = ("_send", "finished", "started", "status")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False
        self.finished = False
        self.status = 0

    async def __call__(self, message: Any) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            self.status = message["status"]
        elif not message.get("more_body", False):
            self.finished = True
        try:
            await self._send(message)
        except OSError:
            raise ClientGone from None


def _sole_cause(exc: BaseException) -> BaseException:
    """The exception inside (nested) one-member exception groups; `exc` itself otherwise."""
    while True:
        members = cast("tuple[BaseException, ...] | None", getattr(exc, "exceptions", None))
        if not isinstance(members, tuple) or len(members) != 1:
            return exc
        exc = members[0]


def _error_body(code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}


def _log_refusal(request: HttpRequest, error: ProtocolError, operations: Operations | None) -> None:
    level = logging.WARNING if isinstance(error, SecurityRefusal) else logging.INFO
    extra: dict[str, Any] = {"status": error.status, "reason": error.reason, "method": request.method}
    # Who, where known: the tenant once authenticated (never the token), the session the request named.
    tenant_id = current_tenant.get()
    if tenant_id is not None:
        extra["tenant_id"] = tenant_id
    session_id = request.headers.get("mcp-session-id")
    if session_id is not None and is_visible_ascii(session_id):
        extra["session_id"] = session_id
    else:
        session_id = None
    if operations is not None:
        operations.refused(tenant_id, session_id, error)  # the audit record
    http_logger.log(
        level, "refused %s %s: %s (%d)", request.method, request.path, error.reason, error.status, extra=extra
    )


def _tenant_challenge(
    error: str | None, description: str | None, metadata_url: str | None, scopes: Sequence[str]
) -> AuthenticationError:
    value = challenge(error=error, description=description, scopes=scopes, resource_metadata=metadata_url)
    description = description or "Authentication required"
    return AuthenticationError(
        401, error or "invalid_token", description, value, reason=f"{error or 'no credentials'}: {description}"
    )
