"""`McpApp`: the ASGI entry point and the public surface of the app edge.

`McpApp(...)` validates its options into an `AppConfig` and builds, once, what every request
shares: the Host/Origin and CORS policies, authentication (`edge_auth`) and the side routes
(`routes`). Running it (the ASGI lifespan, or `lifespan_context()`) builds a `Runtime`: the
session table and both era endpoints. Per request, `__call__` answers CORS preflights and side
routes, checks Host/Origin, authenticates, and hands the request to era negotiation
(`negotiation`), which calls the legacy or modern endpoint (under the token's hold when it can stop
working); rate limits, token lifetimes and audit live in one `Operations`. Every exception meets the one
boundary here: `ProtocolError` becomes its status and JSON-RPC error, anything else a generic 500
with nothing internal in the body.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from typing import Any

import anyio
from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.streamable_http import EventStore

from .._auth.bearer import TokenVerifier
from .._core.asgi import ClientGone, HttpRequest, Receive, Scope, Send, direct_json_sender, send_error, send_json
from .._core.cors import CorsPolicy
from .._core.errors import INTERNAL_ERROR, SERVER_BUSY, ConfigurationError, ProtocolError
from .._core.http import Headers, endpoint_matches
from .._core.origin import OriginPolicy
from .._ops.audit import AuditPolicy
from .._ops.lifecycle import EventHub, EventName, Listener
from .._ops.telemetry import TENANT_ATTRIBUTE, Metrics, current_tenant
from .._ports.fleet import FleetStores
from .._tenancy.limits import RateLimits
from .._tenancy.servers import TenantServers
from .._tenancy.tenants import Tenants
from .boundary import NOT_RUNNING_MESSAGE, Responder, answer_internal_error, error_body, log_refusal
from .config import DEFAULT_MAX_BODY, AppConfig
from .edge_auth import EdgeAuth, ResourceUrls
from .fleet_health import fleet_stats
from .negotiation import get_or_delete, held, post
from .operations import Operations
from .routes import SideRoutes
from .runtime import Runtime, run_lifespan_protocol, stores_opened

__all__ = ["McpApp"]

logger = logging.getLogger("asgi_mcp")


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
        allowed_hosts: `Host` values answered, the DNS-rebinding allow-list (`"example.com"`,
            `"example.com:*"` for any port, `"*"`); others get 421. None keeps the safe default
            (loopback binds answer only loopback names, other binds any name).
        allowed_origins: `Origin` values answered (`"https://app.example.com"`,
            `"http://localhost:*"`, `"*"`); others get 403. None keeps the safe default (loopback
            binds accept only loopback origins, other binds only same-origin requests).
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
        redis_url: share legacy sessions, streams and events with the workers using this Redis 7+ /
            Valkey 8+ (`asgi-mcp[redis]`; see Scaling out); `fleet`: the shared stores as objects.
        fleet_secret: keys the owner digests the shared session directory keeps (16 bytes or more).

    The options are validated once, into an immutable `AppConfig` (`app.config`); an invalid one
    raises `ConfigurationError`.

    Lifespan: served as the top-level app, the ASGI `lifespan` protocol starts and stops it. Mounted
    inside a framework that does not run a sub-application's lifespan (Starlette's `Mount`), enter
    `async with app.lifespan_context():` in the host's lifespan.
    """

    __slots__ = (
        "__weakref__",
        "_auth",
        "_config",
        "_cors",
        "_events",
        "_metrics",
        "_not_running_logged",
        "_operations",
        "_origin_policy",
        "_path",
        "_routes",
        "_runtime",
        "_tenant_servers",
    )

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
        redis_url: str | None = None,
        fleet: FleetStores | None = None,
        fleet_secret: str | bytes | None = None,
    ) -> None:
        # Over 60 lines only by its signature and its copy into AppConfig, one option a line.
        config = AppConfig(
            server=server,
            tenants=tenants,
            token_verifier=token_verifier,
            required_scopes=required_scopes,
            resource_server_url=resource_server_url,
            authorization_servers=authorization_servers,
            validate_resource=validate_resource,
            path=path,
            json_response=json_response,
            event_store=event_store,
            retry_interval=retry_interval,
            session_idle_timeout=session_idle_timeout,
            max_sessions=max_sessions,
            max_body_size=max_body_size,
            allowed_hosts=allowed_hosts,
            allowed_origins=allowed_origins,
            keepalive_interval=keepalive_interval,
            shutdown_timeout=shutdown_timeout,
            tool_schema_ttl=tool_schema_ttl,
            cors_origins=cors_origins or (),
            health_path=health_path,
            ready_path=ready_path,
            gc_freeze=gc_freeze,
            rate_limits=rate_limits,
            max_sessions_per_tenant=max_sessions_per_tenant,
            audit=audit,
            expose_raw_token=expose_raw_token,
            redis_url=redis_url,
            fleet=fleet,
            fleet_secret=fleet_secret.encode() if isinstance(fleet_secret, str) else fleet_secret,
        )
        self._assemble(config)

    def _assemble(self, config: AppConfig) -> None:
        """Build, once, what every request shares; held in slots, no attribute chains per request."""
        self._config = config
        self._events = EventHub()
        self._tenant_servers = TenantServers(self._events) if config.tenants is not None else None
        if config.tenants is not None and self._tenant_servers is not None:
            config.tenants.subscribe(self._tenant_servers)
        self._metrics = Metrics()
        self._metrics.observe(  # read from the run in progress, if any
            lambda: list(run.table.per_tenant().items()) if (run := self._runtime) is not None else [],
            lambda: run.legacy.open_streams if (run := self._runtime) is not None else 0,
        )
        self._path = config.path
        self._cors = CorsPolicy(config.cors_origins) if config.cors_origins else None
        self._origin_policy = OriginPolicy(
            config.allowed_hosts, config.allowed_origins, cors_origins=config.cors_origins
        )
        urls = ResourceUrls(config)
        with_auth = config.tenants is not None or config.token_verifier is not None
        self._auth = EdgeAuth(config, self._tenant_servers, urls) if with_auth else None
        self._routes = SideRoutes(config, urls, self._cors)
        self._operations = Operations.needed(
            self._events,
            config.tenants,
            self._tenant_servers,
            config.rate_limits,
            config.audit,
            verified=config.token_verifier is not None,
        )
        self._runtime: Runtime | None = None
        self._not_running_logged = False

    # -- public surface ---------------------------------------------------------------------------

    @property
    def config(self) -> AppConfig:
        """The app's options, validated and immutable."""
        return self._config

    @property
    def events(self) -> EventHub:
        """The app's event hub (`on` subscribes to it; the serving layer announces `started`/`stopped` on it)."""
        return self._events

    def on(self, event_name: EventName, listener: Listener) -> Callable[[], None]:
        """Subscribe to an event (`"session_created"`, `"tool_called"`, ...); returns an unsubscribe function.

        Listeners may be sync or async; they run off the request path, in order per listener, and a
        failing or slow one never fails or slows a request.
        """
        return self._events.on(event_name, listener)

    @property
    def running(self) -> bool:
        return self._runtime is not None and self._runtime.started and not self._runtime.closing

    def stats(self) -> dict[str, Any]:
        """Counters cheap enough for every health probe. Tenants appear by id, never by token."""
        runtime = self._runtime
        tenants = self._config.tenants
        per_tenant = runtime.table.per_tenant() if runtime is not None else {}
        return {
            "running": self.running,
            "registered_tokens": len(tenants) if tenants is not None else 0,
            "built_servers": (
                self._tenant_servers.built if self._tenant_servers is not None else int(self._config.server is not None)
            ),
            "active_sessions": len(runtime.table) if runtime is not None else 0,
            "sessions_per_tenant": {tenant: count for tenant, count in per_tenant.items() if tenant is not None},
            "open_streams": runtime.legacy.open_streams if runtime is not None else 0,
            "uptime": time.time() - runtime.started_at if runtime is not None else 0.0,
            **(self._operations.stats() if self._operations is not None else Operations.no_stats()),
        }

    async def fleet_stats(self) -> dict[str, Any]:
        """`stats()` as `this_worker`, and the fleet's: workers alive, tokens, sessions per tenant (docs:
        Scaling out). Async, unlike `stats()`: it reads the shared stores (`StoreUnavailable` if down)."""
        return await fleet_stats(self.stats(), self._runtime, self._config.tenants)

    def __repr__(self) -> str:
        return f"McpApp({self._config!r}, running={self.running})"

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
            async with AsyncExitStack() as stack:
                await stack.enter_async_context(stores_opened(self._config))
                tg = await stack.enter_async_context(anyio.create_task_group())
                runtime = Runtime(
                    self._config, tg, self._events, self._metrics, self._tenant_servers, self._operations, app=self
                )
                self._runtime = runtime
                try:
                    await runtime.start()
                    yield self
                finally:
                    runtime.shutdown()
        finally:
            # Cleared only once everything stopped: requests during shutdown get 503, not "not running".
            self._runtime = None

    # -- ASGI -------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # An HTTP request is served right here: no coroutine of its own, one call level less per request.
        if scope["type"] != "http":
            await self._not_http(scope, receive, send)
            return
        path, root_path = scope["path"], scope.get("root_path", "")
        headers = Headers(scope["headers"])
        direct = True  # the answer may go to the server in one call (not once CORS adds to it)
        if self._cors is not None:
            with_cors = await self._routes.cors_send(scope, headers, send)
            if with_cors is None:
                return  # a preflight, answered
            direct = with_cors is send
            send = with_cors
        if (path != self._path or root_path) and not endpoint_matches(path, root_path, self._path):
            await self._routes.answer(scope, send, ready=self.running)
            return
        responder = Responder(send, direct_json_sender(scope, self) if direct else None)
        request = HttpRequest(scope["method"], path, headers, scope)
        auth_token = tenant_token = None
        attributes: dict[str, str | int] = {"http.request.method": request.method}
        try:
            runtime = self._runtime
            if runtime is None:
                await self._not_running(send)
                return
            if runtime.closing:
                raise ProtocolError(503, "Server is shutting down", code=SERVER_BUSY)
            raw = headers.raw
            self._origin_policy.check_raw(raw.get(b"host"), raw.get(b"origin"), scope.get("server"))
            # Authentication comes before the body is read: unauthenticated callers cost nothing.
            if self._auth is None:
                principal = runtime.anonymous
            else:
                principal, access = await self._auth.authenticate(request, runtime.anonymous)
                auth_token = auth_context_var.set(AuthenticatedUser(access))
                if principal.tenant_id is not None:
                    tenant_token = current_tenant.set(principal.tenant_id)
                    attributes[TENANT_ATTRIBUTE] = principal.tenant_id
                operations = self._operations
                if operations is not None and operations.guards(principal.tenant_id, access):
                    await held(runtime, request, principal, access, receive, responder, self._auth.no_longer_valid)
                    return
            if request.method == "POST":
                await post(runtime, request, principal, receive, responder)
            else:
                await get_or_delete(runtime, request, principal, receive, responder)
        except ProtocolError as error:
            log_refusal(request, error, self._operations)
            if not responder.started:
                with suppress(ClientGone):  # (gone meanwhile: nobody to tell)
                    await send_error(responder, error)
        except ClientGone:
            pass
        except Exception:
            await answer_internal_error(request, responder, self._events)
        finally:
            if auth_token is not None:
                auth_context_var.reset(auth_token)
            if tenant_token is not None:
                current_tenant.reset(tenant_token)
            attributes["http.response.status_code"] = responder.status
            self._metrics.requests.add(1, attributes)

    async def _not_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await run_lifespan_protocol(self.lifespan_context, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1000})

    async def _not_running(self, send: Send) -> None:
        if not self._not_running_logged:
            self._not_running_logged = True
            logger.error(NOT_RUNNING_MESSAGE)
        await send_json(send, 500, error_body(INTERNAL_ERROR, NOT_RUNNING_MESSAGE))
