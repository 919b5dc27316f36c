"""OpenTelemetry: what the transport knows, added to what the SDK already records.

The `mcp` SDK's own middleware opens one SERVER span per inbound message (`tools/call echo`, with
`mcp.method.name`, `gen_ai.tool.name`, ...). This module does not open a second one: it adds a
middleware *inside* the SDK's, which puts the HTTP-level attributes and the tenant id on that
span. Metrics follow the OpenTelemetry MCP semantic conventions where they name one
(`mcp.server.session.duration`) and use the `asgi_mcp.` prefix otherwise.

Only `opentelemetry-api` is used (the SDK depends on it already): everything here is a no-op until
the application installs an OpenTelemetry SDK.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from functools import partial
from typing import Any, Final

from mcp.server._otel import OpenTelemetryMiddleware
from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.shared import _otel as sdk_otel
from opentelemetry import metrics, trace

from .._core.asgi import HttpRequest

__all__: list[str] = []

# The tenant whose request is being served; set by the app after authentication.
current_tenant: ContextVar[str | None] = ContextVar("asgi_mcp.tenant", default=None)

TENANT_ATTRIBUTE: Final = "asgi_mcp.tenant.id"

# Semantic-convention buckets for MCP durations (seconds).
_DURATION_BUCKETS: Final = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300]


def annotate(span: trace.Span, ctx: ServerRequestContext[Any, Any]) -> None:
    """Put what the transport knows on the SDK's span for this message."""
    request = ctx.request
    attributes: dict[str, Any] = {"network.protocol.name": "http", "network.transport": "tcp"}
    if isinstance(request, HttpRequest):
        attributes["http.request.method"] = request.method
        attributes["url.path"] = request.path
        server = request.scope.get("server")
        if server:
            attributes["server.address"] = str(server[0])
            if server[1] is not None:
                attributes["server.port"] = int(server[1])
        client = request.client
        if client is not None:
            attributes["client.address"] = client[0]
        session_id = request.headers.get("mcp-session-id")
        if session_id:
            attributes["mcp.session.id"] = session_id
    tenant = current_tenant.get()
    if tenant is not None:
        attributes[TENANT_ATTRIBUTE] = tenant
    span.set_attributes(attributes)


class TransportSpanAttributes:
    """A server middleware that annotates the current span with transport facts: used for a server
    whose middleware has no SDK span of its own (someone else's span may be current)."""

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        span = trace.get_current_span()
        if span.is_recording():  # never, unless an OpenTelemetry SDK is installed
            annotate(span, ctx)
        return await call_next(ctx)


def sdk_tracing_enabled() -> bool:
    """Whether the `mcp` SDK's tracer records anything: an OpenTelemetry SDK is installed (or the
    SDK's tracer was replaced). Checked per request, so a provider installed later takes effect."""
    tracer: Any = sdk_otel._tracer  # pyright: ignore[reportPrivateUsage]
    if isinstance(tracer, trace.ProxyTracer):
        tracer = tracer._tracer  # pyright: ignore[reportPrivateUsage]  # the real tracer once a provider is set
    return not isinstance(tracer, trace.NoOpTracer)


class SpanWhenTracing:
    """The SDK's span middleware, run only while tracing is on, with the transport's facts on its span.

    With no OpenTelemetry SDK installed, the SDK still builds a no-op span, its attributes and an
    extracted trace context for every message: about half the kernel's time per request in
    asgi_mcp's benchmark. Nothing observable depends on that work, so it is skipped until a
    tracer provider exists; then the SDK's middleware runs unchanged. One middleware, not two:
    each level of the chain costs a partial and two calls per message.
    """

    def __init__(self, inner: ServerMiddleware[Any]) -> None:
        self.inner = inner
        self._annotator = TransportSpanAttributes()  # run inside the SDK's span, so it annotates that

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if sdk_tracing_enabled():
            return await self.inner(ctx, partial(self._annotator, call_next=call_next))
        return await call_next(ctx)


def instrument(server: Server[Any]) -> None:
    """Prepare a served server's middleware, once: the SDK's span only while tracing is on, with the
    transport's attributes put on it (or, with no SDK span, on whatever span is current)."""
    if any(isinstance(middleware, SpanWhenTracing | TransportSpanAttributes) for middleware in server.middleware):
        return
    chain = [
        SpanWhenTracing(middleware) if isinstance(middleware, OpenTelemetryMiddleware) else middleware
        for middleware in server.middleware
    ]
    if not any(isinstance(middleware, SpanWhenTracing) for middleware in chain):
        chain.append(TransportSpanAttributes())
    server.middleware[:] = chain


class Metrics:
    """The app's instruments. `observe` registers gauges reading live counters at collection time."""

    def __init__(self) -> None:
        meter = metrics.get_meter("asgi_mcp")
        self.session_duration = meter.create_histogram(
            "mcp.server.session.duration",
            unit="s",
            description="Duration of MCP sessions (legacy era) from initialize to their end.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self.requests = meter.create_counter(
            "asgi_mcp.requests",
            unit="{request}",
            description="HTTP requests to the MCP endpoint, by method, response status and tenant.",
        )
        self._meter = meter
        self.live_sessions: Callable[[], Iterable[tuple[str | None, int]]] | None = None
        self.open_streams: Callable[[], int] | None = None

    def observe(self, sessions: Callable[[], Iterable[tuple[str | None, int]]], streams: Callable[[], int]) -> None:
        """Report this app's live counts through the process's gauges.

        An SDK meter registers an observable instrument once per name and ignores a second
        registration, callbacks included; a meter taken before an SDK was installed forwards its
        first registration to the real one. So the gauges report every live app of the process
        (several apps, or one rebuilt), and are registered once per meter.
        """
        self.live_sessions, self.open_streams = sessions, streams
        _observed.add(self)
        if self._meter in _gauge_meters:
            return
        _gauge_meters.add(self._meter)
        self._meter.create_observable_gauge(
            "asgi_mcp.sessions.active", [_session_gauge], unit="{session}", description="Live legacy-era sessions."
        )
        self._meter.create_observable_gauge(
            "asgi_mcp.streams.open", [_stream_gauge], unit="{stream}", description="Open SSE responses."
        )


# Apps whose counts the gauges report (an app that is gone drops out), and the meters holding gauges.
_observed: weakref.WeakSet[Metrics] = weakref.WeakSet()
_gauge_meters: weakref.WeakSet[Any] = weakref.WeakSet()


def _session_gauge(_: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
    totals: dict[str | None, int] = {}
    for source in list(_observed):
        for tenant, count in source.live_sessions() if source.live_sessions is not None else ():
            totals[tenant] = totals.get(tenant, 0) + count
    for tenant, count in totals.items():
        yield metrics.Observation(count, {TENANT_ATTRIBUTE: tenant} if tenant is not None else {})


def _stream_gauge(_: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
    streams = [source.open_streams for source in list(_observed)]
    yield metrics.Observation(sum(count() for count in streams if count is not None))
