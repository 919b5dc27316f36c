"""OpenTelemetry: one SERVER span per inbound message (the SDK's, annotated by the transport, never
a second one), and the transport's metrics, read with the OpenTelemetry SDK's in-memory exporter
and reader; in memory on asyncio and Trio.

Each test installs its own TracerProvider and MeterProvider as the global ones and restores the
previous globals afterwards. The SDK's `mcp.shared._otel` takes its tracer once, at import (a proxy
that binds to the first provider it sees), so the test also gives it a tracer of its own provider.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import anyio
import mcp.shared._otel
import pytest
from mcp.server import MCPServer
from opentelemetry import metrics, trace
from opentelemetry.metrics import _internal as metrics_internal
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.util._once import Once

from asgi_mcp import McpApp, Tenants
from tests.kit.mcp_servers import TOKEN_A, TOKEN_B
from tests.kit.memory import TokenClient, open_session, serving, session_call
from tests.kit.messages import LEGACY, call_tool
from tests.kit.polling import wait_until

pytestmark = pytest.mark.anyio

GUARD: Final = 10.0
TENANT_ATTRIBUTE: Final = "asgi_mcp.tenant.id"


@dataclass
class Telemetry:
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader

    def server_spans(self) -> list[ReadableSpan]:
        return [span for span in self.spans.get_finished_spans() if span.kind == SpanKind.SERVER]

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.server_spans() if span.name == name]

    def metrics(self) -> dict[str, Any]:
        """Metric name -> its data (the last collection)."""
        data = self.reader.get_metrics_data()
        found: dict[str, Any] = {}
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found[metric.name] = metric
        return found


@pytest.fixture
def telemetry(monkeypatch: pytest.MonkeyPatch) -> Iterator[Telemetry]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    # The globals are set-once; fresh guards let this test set them, monkeypatch puts the old back.
    monkeypatch.setattr(trace, "_TRACER_PROVIDER_SET_ONCE", Once())
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    monkeypatch.setattr(metrics_internal, "_METER_PROVIDER_SET_ONCE", Once())
    monkeypatch.setattr(metrics_internal, "_METER_PROVIDER", None)
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    monkeypatch.setattr(mcp.shared._otel, "_tracer", trace.get_tracer("mcp-python-sdk"))
    try:
        yield Telemetry(spans, reader)
    finally:
        tracer_provider.shutdown()
        meter_provider.shutdown()


def echo_server(name: str = "otel-test") -> MCPServer:
    mcp_server = MCPServer(name, version="1.0.0")

    @mcp_server.tool()
    def echo(text: str) -> str:
        return text

    return mcp_server


def tenants_app(**options: Any) -> McpApp:
    tenants = Tenants()
    tenants.add(TOKEN_A, echo_server, label="alpha")
    tenants.add(TOKEN_B, echo_server, label="bravo")
    return McpApp(tenants=tenants, **options)


def text(answer: dict[str, Any]) -> str:
    assert "result" in answer, answer
    return str(answer["result"]["content"][0]["text"])


# -- traces ---------------------------------------------------------------------------------------


async def test_one_server_span_per_message_carrying_the_transport_attributes(telemetry: Telemetry) -> None:
    """Legacy era, tenants mode: the tools/call span is the SDK's, with our HTTP, session and tenant facts."""
    with anyio.fail_after(GUARD):
        async with serving(tenants_app()) as client:
            alpha = TokenClient(client, TOKEN_A)
            session_id = await alpha.open_session()
            telemetry.spans.clear()
            assert text(await alpha.call(session_id, call_tool(1, "echo", {"text": "hi"}))) == "hi"
            await wait_until(lambda: bool(telemetry.named("tools/call echo")))
            one_call = telemetry.server_spans()
            assert text(await alpha.call(session_id, call_tool(2, "echo", {"text": "again"}))) == "again"
            await wait_until(lambda: len(telemetry.named("tools/call echo")) == 2)

    [span] = one_call  # exactly one SERVER span for the one message: no duplicate from the transport
    assert span.name == "tools/call echo"
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "mcp-python-sdk"
    attributes = dict(span.attributes or {})
    # The SDK's own ...
    assert attributes["mcp.method.name"] == "tools/call"
    assert attributes["gen_ai.tool.name"] == "echo"
    assert attributes["jsonrpc.request.id"] == "1"
    # ... and the transport's.
    assert attributes["http.request.method"] == "POST"
    assert attributes["url.path"] == "/mcp"
    assert attributes["network.protocol.name"] == "http"
    assert attributes["network.transport"] == "tcp"
    assert attributes["mcp.session.id"] == session_id
    assert attributes[TENANT_ATTRIBUTE] == "alpha"
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["server.port"] == 8000
    assert attributes["client.address"] == "127.0.0.1"
    assert "error.type" not in attributes
    # Nothing else of ours opens spans: every span of the run is the SDK's, one per message.
    scopes = {s.instrumentation_scope.name for s in telemetry.spans.get_finished_spans() if s.instrumentation_scope}
    assert scopes == {"mcp-python-sdk"}
    ids = [str(dict(s.attributes or {}).get("jsonrpc.request.id")) for s in telemetry.named("tools/call echo")]
    assert sorted(ids) == ["1", "2"]


async def test_the_session_handshake_spans_are_not_duplicated_either(telemetry: Telemetry) -> None:
    with anyio.fail_after(GUARD):
        async with serving(tenants_app()) as client:
            await TokenClient(client, TOKEN_B).open_session()
            await wait_until(lambda: len(telemetry.server_spans()) >= 2)
    names = sorted(span.name for span in telemetry.server_spans())
    assert names == ["initialize", "notifications/initialized"]
    for span in telemetry.server_spans():
        assert dict(span.attributes or {})[TENANT_ATTRIBUTE] == "bravo"


async def test_modern_era_span_has_the_tenant_and_no_session(telemetry: Telemetry) -> None:
    with anyio.fail_after(GUARD):
        async with serving(tenants_app()) as client:
            response = await TokenClient(client, TOKEN_A).modern(
                5, "tools/call", {"name": "echo", "arguments": {"text": "m"}}
            )
            body = await response.read()
            assert response.status == 200, body
            await wait_until(lambda: bool(telemetry.named("tools/call echo")))
    [span] = telemetry.server_spans()
    attributes = dict(span.attributes or {})
    assert span.name == "tools/call echo"
    assert attributes["mcp.method.name"] == "tools/call"
    assert attributes[TENANT_ATTRIBUTE] == "alpha"
    assert attributes["http.request.method"] == "POST"
    assert attributes["url.path"] == "/mcp"
    assert attributes["network.protocol.name"] == "http"
    assert "mcp.session.id" not in attributes


async def test_single_server_spans_carry_no_tenant(telemetry: Telemetry) -> None:
    with anyio.fail_after(GUARD):
        async with serving(McpApp(echo_server())) as client:
            session_id = await open_session(client)
            telemetry.spans.clear()
            answer = await session_call(client, session_id, call_tool(3, "echo", {"text": "solo"}))
            assert text(answer) == "solo"
            await wait_until(lambda: bool(telemetry.server_spans()))
    [span] = telemetry.server_spans()
    attributes = dict(span.attributes or {})
    assert span.name == "tools/call echo"
    assert attributes["mcp.session.id"] == session_id
    assert TENANT_ATTRIBUTE not in attributes


# -- metrics --------------------------------------------------------------------------------------


def points(metric: Any) -> list[tuple[dict[str, Any], Any]]:
    return [(dict(point.attributes or {}), point) for point in metric.data.data_points]


def gauge_values(found: dict[str, Any], name: str) -> dict[str | None, int]:
    """A gauge's values by tenant; {} when nothing was observed (the SDK then omits the metric)."""
    if name not in found:
        return {}
    return {attributes.get(TENANT_ATTRIBUTE): point.value for attributes, point in points(found[name])}


async def test_metrics_sessions_streams_requests_and_session_duration(telemetry: Telemetry) -> None:
    app = tenants_app()
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            alpha, bravo = TokenClient(client, TOKEN_A), TokenClient(client, TOKEN_B)
            session_a = await alpha.open_session()
            session_b = await bravo.open_session()
            await alpha.open_session()
            stream = await alpha.get(session_a)
            assert stream.status == 200
            await wait_until(lambda: app.stats()["open_streams"] == 1)
            live = telemetry.metrics()

            stream.disconnect()
            await wait_until(lambda: app.stats()["open_streams"] == 0)
            refused = await client.post(call_tool(1, "echo", {"text": "x"}), version=LEGACY)  # no token
            await refused.read()
            deleted = await bravo.delete(session_b)
            await deleted.read()
            assert deleted.status == 200
            await wait_until(lambda: app.stats()["sessions_per_tenant"] == {"alpha": 2})
            after = telemetry.metrics()

    assert gauge_values(live, "asgi_mcp.sessions.active") == {"alpha": 2, "bravo": 1}
    assert gauge_values(live, "asgi_mcp.streams.open") == {None: 1}
    assert live["asgi_mcp.sessions.active"].unit == "{session}"
    assert "mcp.server.session.duration" not in live  # no session has ended yet

    assert gauge_values(after, "asgi_mcp.sessions.active") == {"alpha": 2}
    assert gauge_values(after, "asgi_mcp.streams.open") == {None: 0}

    duration = after["mcp.server.session.duration"]
    assert duration.unit == "s"
    [(attributes, point)] = points(duration)
    assert attributes == {TENANT_ATTRIBUTE: "bravo"}
    assert point.count == 1
    assert 0 <= point.sum < GUARD
    assert list(point.explicit_bounds)[:3] == [0.01, 0.02, 0.05]  # the MCP semantic-convention buckets

    requests: dict[tuple[str, int], int] = {}
    for attributes, point in points(after["asgi_mcp.requests"]):
        key = (attributes["http.request.method"], attributes["http.response.status_code"])
        requests[key] = requests.get(key, 0) + point.value
    # 3 initialize + 3 initialized (202) + the GET stream + the refused POST + the DELETE
    assert requests == {("POST", 200): 3, ("POST", 202): 3, ("GET", 200): 1, ("POST", 401): 1, ("DELETE", 200): 1}


async def test_shutdown_records_every_session_duration(telemetry: Telemetry) -> None:
    app = tenants_app()
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            await TokenClient(client, TOKEN_A).open_session()
            await TokenClient(client, TOKEN_B).open_session()
    found = telemetry.metrics()
    durations = {
        attributes[TENANT_ATTRIBUTE]: point.count for attributes, point in points(found["mcp.server.session.duration"])
    }
    assert durations == {"alpha": 1, "bravo": 1}
    assert gauge_values(found, "asgi_mcp.sessions.active") == {}


async def test_gauges_count_every_app_of_the_process(telemetry: Telemetry) -> None:
    """Two apps (two mounted endpoints, say) on one meter: the gauges report both, not the first only."""
    first, second = McpApp(echo_server("first")), tenants_app()
    with anyio.fail_after(GUARD):
        async with serving(first) as one, serving(second) as two:
            await open_session(one)
            await TokenClient(two, TOKEN_A).open_session()
            await TokenClient(two, TOKEN_A).open_session()
            found = telemetry.metrics()
    assert gauge_values(found, "asgi_mcp.sessions.active") == {None: 1, "alpha": 2}
    del first, second
    gc.collect()
    assert gauge_values(telemetry.metrics(), "asgi_mcp.sessions.active") == {}
