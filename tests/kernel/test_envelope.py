"""A modern request's connection (`_kernel.envelope`) is the SDK's `Connection.from_envelope`, read lazily.

Held to the SDK's own constructor attribute by attribute over generated envelopes, and through the
ASGI interface: a tool reading the client's info and capabilities gets the envelope's, each request its
own objects, so one handler changing them is not seen by the next request with the same envelope.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import mcp_types as types
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp.server import MCPServer, Server
from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context

from asgi_mcp import McpApp
from asgi_mcp._kernel.envelope import EnvelopeConnection, ReadyEvent
from tests.kit.memory import final_message, serving
from tests.kit.messages import MODERN

pytestmark = pytest.mark.anyio

INFO_KEY = "io.modelcontextprotocol/clientInfo"
CAPS_KEY = "io.modelcontextprotocol/clientCapabilities"
VERSION_KEY = "io.modelcontextprotocol/protocolVersion"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
client_infos = st.one_of(
    json_values,
    st.fixed_dictionaries({"name": st.text(max_size=5), "version": st.text(max_size=5)}),
    st.fixed_dictionaries(
        {"name": st.text(max_size=5), "version": st.just("1")}, optional={"title": st.text(max_size=5) | st.none()}
    ),
)
capability_values = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "sampling": st.just({}) | st.just({"tools": {}}) | json_values,
            "elicitation": st.just({"form": {}, "url": {}}) | json_values,
            "roots": st.fixed_dictionaries({"listChanged": st.booleans()}),
            "experimental": st.dictionaries(st.text(max_size=3), st.just({}), max_size=2),
            "extensions": st.dictionaries(st.text(max_size=3), st.just({}), max_size=2),
        },
    ),
)

# What `Connection.__init__` sets; `EnvelopeConnection` sets the same (its envelope facts on first use).
SDK_CONNECTION_ATTRIBUTES = {
    "outbound",
    "protocol_version",
    "session_id",
    "client_capabilities",
    "_client_params",
    "initialized",
    "state",
    "exit_stack",
}


def facts(connection: Connection) -> dict[str, Any]:
    """Everything a handler or the kernel can read off a connection, by value."""
    return {
        "protocol_version": connection.protocol_version,
        "session_id": connection.session_id,
        "outbound": connection.outbound,
        "has_standalone_channel": connection.has_standalone_channel,
        "client_params": connection.client_params,
        "client_capabilities": connection.client_capabilities,
        "initialize_accepted": connection.initialize_accepted,
        "initialized": connection.initialized.is_set(),
        "state": connection.state,
        "exit_stack": type(connection.exit_stack),
    }


def test_the_sdk_connection_has_the_attributes_mirrored() -> None:
    """`EnvelopeConnection` skips `Connection.__init__`: an SDK release that adds to it must be mirrored."""
    assert set(vars(Connection.from_envelope(MODERN, None, {}))) == SDK_CONNECTION_ATTRIBUTES


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(info=client_infos, capabilities=capability_values)
def test_every_envelope_reads_as_the_sdk_builds_it(info: Any, capabilities: Any) -> None:
    ready = anyio.Event()
    ready.set()
    ours = EnvelopeConnection(MODERN, info, capabilities, ready)
    assert facts(ours) == facts(Connection.from_envelope(MODERN, info, capabilities))


def test_setting_before_reading_behaves_as_the_sdk_connection() -> None:
    ready = anyio.Event()
    ready.set()
    info = {"name": "c", "version": "1"}
    params = types.InitializeRequestParams(
        protocol_version=MODERN,
        capabilities=types.ClientCapabilities(roots=types.RootsCapability(list_changed=True)),
        client_info=types.Implementation(name="other", version="2"),
    )
    sdk, ours = Connection.from_envelope(MODERN, info, {}), EnvelopeConnection(MODERN, info, {}, ready)
    for connection in (sdk, ours):
        connection.client_params = params
    assert facts(ours) == facts(sdk)
    capabilities = types.ClientCapabilities(sampling=types.SamplingCapability())
    sdk, ours = Connection.from_envelope(MODERN, info, {}), EnvelopeConnection(MODERN, info, {}, ready)
    for connection in (sdk, ours):
        connection.client_capabilities = capabilities
    assert facts(ours) == facts(sdk)
    sdk, ours = Connection.from_envelope(MODERN, info, {}), EnvelopeConnection(MODERN, info, {}, ready)
    for connection in (sdk, ours):
        connection.client_params = None
    assert facts(ours) == facts(sdk)


async def test_the_ready_event_is_made_once_and_set() -> None:
    ready = ReadyEvent()
    event = ready.get()
    assert event.is_set()
    assert ready.get() is event
    with anyio.fail_after(5):
        await event.wait()


def envelope_call(request_id: int, name: str, meta: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    params = {"name": name, "arguments": {}, "_meta": {VERSION_KEY: MODERN, **meta}}
    headers = {"mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": name}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}, headers


def client_view_server() -> Server[Any]:
    """`whoami` answers the client info and capabilities its request's connection holds, then changes
    the capabilities it was given (a later request must not see that)."""

    async def list_tools(ctx: ServerRequestContext[Any], params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[types.Tool(name="whoami", input_schema={"type": "object"})])

    async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        session = ctx.session
        client = session.client_params
        capabilities = session.client_capabilities
        seen = {
            "info": client.client_info.model_dump(exclude_none=True) if client is not None else None,
            "capabilities": capabilities.model_dump(by_alias=True, exclude_none=True) if capabilities else None,
        }
        if capabilities is not None:
            capabilities.roots = types.RootsCapability(list_changed=False)
        return types.CallToolResult(content=[types.TextContent(type="text", text=json.dumps(seen))])

    return Server("client-view", on_list_tools=list_tools, on_call_tool=call_tool)


async def seen_by(client: Any, request_id: int, meta: dict[str, Any]) -> dict[str, Any]:
    body, headers = envelope_call(request_id, "whoami", meta)
    response = await client.post(body, headers=headers)
    assert response.status == 200
    result = (await final_message(response))["result"]
    return json.loads(result["content"][0]["text"])


async def test_a_tool_reads_its_own_requests_envelope() -> None:
    with anyio.fail_after(10):
        async with serving(McpApp(client_view_server(), json_response=True)) as client:
            sampling = {CAPS_KEY: {"sampling": {}, "roots": {"listChanged": True}}}
            with_info = {**sampling, INFO_KEY: {"name": "probe", "version": "3"}}
            assert await seen_by(client, 1, with_info) == {
                "info": {"name": "probe", "version": "3"},
                "capabilities": {"sampling": {}, "roots": {"listChanged": True}},
            }
            # The first handler changed its capabilities object; the same envelope again reads as sent.
            assert (await seen_by(client, 2, with_info))["capabilities"]["roots"] == {"listChanged": True}
            assert await seen_by(client, 3, sampling) == {
                "info": None,
                "capabilities": {"sampling": {}, "roots": {"listChanged": True}},
            }


async def test_an_mcpserver_tool_sees_the_envelopes_capabilities() -> None:
    server = MCPServer("caps", log_level="WARNING")

    async def elicits(ctx: Context) -> str:
        capabilities = ctx.client_capabilities
        return "form" if capabilities is not None and capabilities.elicitation is not None else "none"

    elicits.__annotations__ = {"ctx": Context, "return": str}
    server.tool()(elicits)
    with anyio.fail_after(10):
        async with serving(McpApp(server, json_response=True)) as client:
            for request_id, capabilities, expected in ((1, {"elicitation": {}}, "form"), (2, {}, "none")):
                body, headers = envelope_call(request_id, "elicits", {CAPS_KEY: capabilities})
                result = (await final_message(await client.post(body, headers=headers)))["result"]
                assert result["content"][0]["text"] == expected
