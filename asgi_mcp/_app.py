"""`McpApp`: the ASGI application. The one thin shell around the protocol pieces.

Per request: route by path and method, check Host/Origin, pick the era from `MCP-Protocol-Version`,
read the body under its limit, classify it, and hand it to the legacy or modern endpoint. Every
exception meets one boundary here: `ProtocolError` becomes its status and JSON-RPC error, anything
else a generic 500 with nothing internal in the body.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Final

import anyio
import anyio.abc
from mcp.server.streamable_http import EventStore

from ._asgi import ClientGone, HttpRequest, Receive, Scope, Send, read_body, send_error, send_json
from ._errors import INTERNAL_ERROR, SERVER_BUSY, ConfigurationError, ProtocolError, SecurityRefusal
from ._event_store import EventLog
from ._hosting import ServerHost
from ._http import (
    Headers,
    accepts,
    endpoint_matches,
    era_of,
    is_json_content_type,
    method_not_allowed,
    normalize_endpoint,
)
from ._jsonrpc import parse_body
from ._legacy import LegacyEndpoint, LegacySession, Principal
from ._modern import ModernEndpoint
from ._registry import SessionTable
from ._security import OriginPolicy

__all__ = ["McpApp"]

logger = logging.getLogger("asgi_mcp")
http_logger = logging.getLogger("asgi_mcp.http")

DEFAULT_MAX_BODY: Final = 4 * 1024 * 1024
NOT_RUNNING_MESSAGE: Final = (
    "asgi_mcp.McpApp is not running. Serve it as the top-level ASGI app (the server runs its lifespan), "
    "or, when it is mounted inside another framework, enter `async with mcp_app.lifespan_context():` "
    "in the host application's lifespan."
)


class _Runtime:
    """What exists only while the app runs: the task group, the session table, the endpoints."""

    def __init__(self, app: McpApp, task_group: anyio.abc.TaskGroup) -> None:
        self.task_group = task_group
        self.closing = False
        self.table: SessionTable[LegacySession] = SessionTable(
            max_sessions=app.max_sessions, idle_timeout=app.session_idle_timeout
        )
        self.legacy = LegacyEndpoint(
            table=self.table,
            task_group=task_group,
            json_response=app.json_response,
            events=EventLog(app.event_store) if app.event_store is not None else None,
            retry_ms=app.retry_interval,
            keepalive=app.keepalive_interval,
        )
        self.modern = ModernEndpoint(
            json_response=app.json_response, keepalive=app.keepalive_interval, tool_schema_ttl=app.tool_schema_ttl
        )
        self.wake_reaper = anyio.Event()

    async def reap_forever(self) -> None:
        """End idle sessions when their deadline passes; sleeps until the earliest one."""
        while True:
            deadline = self.table.next_deadline()
            with anyio.move_on_after(60 if deadline is None else max(0.0, deadline - anyio.current_time())):
                await self.wake_reaper.wait()
            self.wake_reaper = anyio.Event()
            self.legacy.reap(anyio.current_time())


class McpApp:
    """An ASGI 3 application serving one MCP server over Streamable HTTP, both protocol eras.

    Args:
        server: an `mcp.server.Server` (low-level) or an `mcp.server.MCPServer`.
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
        allowed_hosts, allowed_origins: DNS-rebinding allow-lists (see `OriginPolicy`); None keeps
            the safe default (loopback binds answer only loopback names and origins).
        keepalive_interval: seconds of silence after which an SSE stream gets a comment line.
        shutdown_timeout: seconds shutdown waits for sessions and server lifespans to finish.
        tool_schema_ttl: seconds a server's tool schemas are cached for `Mcp-Param-*` validation.

    Lifespan: served as the top-level app, the ASGI `lifespan` protocol starts and stops it. Mounted
    inside a framework that does not run a sub-application's lifespan (Starlette's `Mount`), enter
    `async with app.lifespan_context():` in the host's lifespan.
    """

    def __init__(
        self,
        server: Any,
        *,
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
    ) -> None:
        if max_body_size < 1:
            raise ConfigurationError("max_body_size must be positive")
        if max_sessions < 1:
            raise ConfigurationError("max_sessions must be at least 1")
        if session_idle_timeout is not None and session_idle_timeout <= 0:
            raise ConfigurationError("session_idle_timeout must be positive, or None")
        if retry_interval is not None and retry_interval < 0:
            raise ConfigurationError("retry_interval must not be negative")
        if keepalive_interval <= 0 or shutdown_timeout < 0 or tool_schema_ttl < 0:
            raise ConfigurationError(
                "keepalive_interval must be positive; shutdown_timeout and tool_schema_ttl not negative"
            )
        self.host = ServerHost(server)
        self.path = normalize_endpoint(path)
        self.json_response = json_response
        self.event_store = event_store
        self.retry_interval = retry_interval
        self.session_idle_timeout = session_idle_timeout
        self.max_sessions = max_sessions
        self.max_body_size = max_body_size
        self.keepalive_interval = keepalive_interval
        self.shutdown_timeout = shutdown_timeout
        self.tool_schema_ttl = tool_schema_ttl
        self.origin_policy = OriginPolicy(allowed_hosts, allowed_origins)
        self._runtime: _Runtime | None = None
        self._not_running_logged = False
        self._principal = Principal(owner="", tenant_id=None, host=self._get_host)

    # -- lifespan ---------------------------------------------------------------------------------

    @asynccontextmanager
    async def lifespan_context(self) -> AsyncIterator[McpApp]:
        """Run the app: start the server's lifespan, serve sessions; on exit, end them all.

        Shutdown closes every stream and session and waits at most `shutdown_timeout` seconds for
        session tasks and the server lifespan to finish before cancelling them.
        """
        if self._runtime is not None:
            raise ConfigurationError("McpApp is already running; an app instance runs once at a time")
        async with anyio.create_task_group() as tg:
            runtime = _Runtime(self, tg)
            self._runtime = runtime
            try:
                await self.host.start(tg)
                tg.start_soon(runtime.reap_forever)
                yield self
            finally:
                self._shutdown(runtime)

    def _shutdown(self, runtime: _Runtime) -> None:
        if runtime.closing:
            return
        runtime.closing = True
        runtime.legacy.end_all("shutdown")
        self.host.stop()
        self._runtime = None
        # Everything still running gets `shutdown_timeout` to finish, then is cancelled.
        runtime.task_group.cancel_scope.deadline = anyio.current_time() + self.shutdown_timeout
        runtime.wake_reaper.set()
        self.host = ServerHost(self.host.server, label=self.host.label)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        async with AsyncExitStack() as stack:
            message = await receive()
            if message["type"] != "lifespan.startup":
                return
            try:
                await stack.enter_async_context(self.lifespan_context())
            except Exception as exc:
                logger.exception("asgi_mcp startup failed")
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})

    async def _get_host(self) -> ServerHost:
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
        if not endpoint_matches(scope["path"], scope.get("root_path", ""), self.path):
            await send_json(send, 404, {"error": "not_found"})
            return
        responder = _Responder(send)
        headers = Headers(scope["headers"])
        request = HttpRequest(scope["method"], scope["path"], headers, scope)
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
            await self._dispatch(runtime, request, receive, responder)
        except ProtocolError as error:
            _log_refusal(request, error)
            if not responder.started:
                await send_error(responder, error)
        except ClientGone:
            pass
        except Exception:
            # The app's one catch-all: a bug, never the client's fault. Nothing internal leaves.
            logger.exception("unexpected error serving %s %s", request.method, request.path)
            if not responder.started:
                await send_json(responder, 500, _error_body(INTERNAL_ERROR, "Internal server error"))

    async def _dispatch(self, runtime: _Runtime, request: HttpRequest, receive: Receive, send: Send) -> None:
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
            if era == "modern":
                host = await self._principal.host()
                await runtime.modern.post(
                    request, message, host, receive, send, accepts_json=json_ok, accepts_sse=sse_ok
                )
                return
            if not json_ok:
                raise ProtocolError(
                    406, "Not Acceptable: client must accept application/json", reason="Accept lacks application/json"
                )
            await runtime.legacy.post(request, message, self._principal, send, accepts_sse=sse_ok)
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
            await runtime.legacy.get(request, self._principal, receive, send)
        elif method == "DELETE":
            if era == "modern":
                raise method_not_allowed("POST")
            await runtime.legacy.delete(request, self._principal, send)
        else:
            raise method_not_allowed("GET, POST, DELETE")


class _Responder:
    """Wraps ASGI `send`: remembers whether the response started, and turns a send on a closed
    connection (`OSError`, ASGI 2.4) into `ClientGone`."""

    __slots__ = ("_send", "started")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def __call__(self, message: Any) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        try:
            await self._send(message)
        except OSError:
            raise ClientGone from None


def _error_body(code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}


def _log_refusal(request: HttpRequest, error: ProtocolError) -> None:
    level = logging.WARNING if isinstance(error, SecurityRefusal) else logging.INFO
    http_logger.log(
        level,
        "refused %s %s: %s (%d)",
        request.method,
        request.path,
        error.reason,
        error.status,
        extra={"status": error.status, "reason": error.reason, "method": request.method},
    )
