"""The kernel's result shaping (`KernelRunner`) writes exactly what the SDK's `ServerRunner` writes.

A plain tool result skips the SDK's dump-validate-dump round (`_kernel/results.py`) and a 2026-era
answer's `serverInfo` stamp is the host's copy: held here to the SDK's own output, key order
included, over generated results for every version the SDK serves, and over the real ASGI interface.
"""

from __future__ import annotations

import json
import math
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mcp import types
from mcp.server import MCPServer, Server
from mcp.server.connection import Connection
from mcp.server.runner import ServerRunner, _dump_result  # pyright: ignore[reportPrivateUsage]
from mcp_types.methods import serialize_server_result
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

from asgi_mcp import McpApp, Tenants
from asgi_mcp._kernel.hosting import ServerHost
from asgi_mcp._kernel.results import plain_tool_result
from asgi_mcp._kernel.runner import KernelRunner
from tests.kit.mcp_servers import TOKEN_A, factory_of
from tests.kit.memory import final_message, modern_post, open_session, serving, session_call
from tests.kit.messages import MODERN, call_tool, modern

VERSIONS = (*HANDSHAKE_PROTOCOL_VERSIONS, *MODERN_PROTOCOL_VERSIONS)
GUARD = 10.0

# JSON values, and values a JSON-mode dump changes (a tuple, a NaN, an integer key, a set).
json_leaves = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(
    json_leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3), max_leaves=8
)
odd_values = st.sampled_from([(1, 2), math.nan, math.inf, {1: "one"}, {"a": frozenset()}, b"raw"])
structured = (
    st.none()
    | st.dictionaries(st.text(), json_values, max_size=4)
    | st.dictionaries(st.text(), json_values | odd_values, min_size=1, max_size=3).map(lambda d: {**d, "odd": (1,)})
    | json_values
)

texts = st.text() | st.sampled_from(["", "\ud800", "é\x00\n"])
plain_blocks = st.builds(lambda text: types.TextContent(type="text", text=text), texts)
other_blocks = st.sampled_from(
    [
        types.TextContent(type="text", text="a", annotations=types.Annotations(priority=0.5)),
        types.TextContent(type="text", text="m", _meta={"k": "v"}),
        types.ImageContent(type="image", data="aGk=", mime_type="image/png"),
        types.ResourceLink(type="resource_link", uri="file:///x", name="x"),
    ]
)


@st.composite
def tool_results(draw: st.DrawFn) -> types.CallToolResult:
    blocks = draw(st.lists(plain_blocks, max_size=3) | st.lists(plain_blocks | other_blocks, min_size=1, max_size=3))
    options: dict[str, Any] = {"content": blocks, "is_error": draw(st.booleans())}
    value = draw(structured)
    if value is not None:
        options["structured_content"] = value
    if draw(st.integers(0, 3)) == 0:
        options["_meta"] = {"note": "handler meta"}
    return types.CallToolResult(**options)


def runners(server: Server[Any], version: str) -> tuple[ServerRunner[Any], KernelRunner]:
    connection = Connection.from_envelope(version, None, {})
    return ServerRunner(server, connection, None), KernelRunner(server, connection, None, host=ServerHost(server))


def sdk_or_error(runner: ServerRunner[Any], version: str, result: Any) -> Any:
    """The shaped result (as JSON text, for the key order, and as objects, for the types JSON text
    conflates, like an integer key), or the refusal."""
    try:
        shaped = runner._serialize("tools/call", version, result)  # pyright: ignore[reportPrivateUsage]
        return json.dumps(shaped), shaped
    except Exception as exc:
        return type(exc), str(exc)


SERVER = Server("shape", version="2.0.0", website_url="https://example.com/", icons=[types.Icon(src="https://i/x.png")])


@settings(max_examples=300, deadline=None)
@given(result=tool_results(), version=st.sampled_from(VERSIONS))
def test_every_result_is_shaped_as_the_sdk_shapes_it(result: types.CallToolResult, version: str) -> None:
    sdk, kernel = runners(SERVER, version)
    # The same values, keys in the same order; or the same refusal.
    assert sdk_or_error(kernel, version, result) == sdk_or_error(sdk, version, result)


@pytest.mark.parametrize(
    "odd", [(1, 2), math.nan, -math.inf, {1: "one"}, {"a": {2: "two"}}, {"a": frozenset()}, b"raw"]
)
@pytest.mark.parametrize("version", [VERSIONS[-2], MODERN])
def test_values_a_json_dump_changes_are_left_to_the_sdk(odd: Any, version: str) -> None:
    result = types.CallToolResult(content=[types.TextContent(type="text", text="t")], structured_content={"v": [odd]})
    assert plain_tool_result(result, version) is None
    sdk, kernel = runners(SERVER, version)
    assert sdk_or_error(kernel, version, result) == sdk_or_error(sdk, version, result)


@pytest.mark.parametrize("version", VERSIONS)
def test_plain_results_take_the_short_path(version: str) -> None:
    result = types.CallToolResult(
        content=[types.TextContent(type="text", text="hi")], structured_content={"result": [1, 2.5, None, {"a": True}]}
    )
    shaped = plain_tool_result(result, version)
    assert shaped is not None  # the layout probe recognized this version's surface
    sieved = serialize_server_result("tools/call", version, _dump_result(result))
    assert json.dumps(shaped) == json.dumps(sieved)
    # The answer is the caller's own: nothing in it is the handler's object.
    assert shaped["structuredContent"] == result.structured_content
    assert shaped["structuredContent"] is not result.structured_content
    assert shaped["structuredContent"]["result"] is not result.structured_content["result"]


@pytest.mark.parametrize(
    "meta",
    [
        None,
        {"other": 1},
        {"io.modelcontextprotocol/serverInfo": None},
        {"io.modelcontextprotocol/serverInfo": {"name": "mine"}},
    ],
)
def test_the_stamp_is_the_sdks_and_never_shared(meta: dict[str, Any] | None) -> None:
    sdk, kernel = runners(SERVER, MODERN)
    result = {"content": []} if meta is None else {"content": [], "_meta": meta}
    ours = kernel._stamp_server_info(MODERN, json.loads(json.dumps(result)))  # pyright: ignore[reportPrivateUsage]
    theirs = sdk._stamp_server_info(MODERN, json.loads(json.dumps(result)))  # pyright: ignore[reportPrivateUsage]
    assert json.dumps(ours) == json.dumps(theirs)
    again = kernel._stamp_server_info(MODERN, {"content": []})  # pyright: ignore[reportPrivateUsage]
    stamp = again["_meta"]["io.modelcontextprotocol/serverInfo"]
    stamp["icons"][0]["src"] = "changed by a caller"
    fresh = kernel._stamp_server_info(MODERN, {"content": []})  # pyright: ignore[reportPrivateUsage]
    assert fresh["_meta"]["io.modelcontextprotocol/serverInfo"] == SERVER.server_info_stamp


def test_a_flat_stamp_is_copied_too() -> None:
    host = ServerHost(Server("flat", version="1"))
    first, second = host.server_info_stamp(), host.server_info_stamp()
    assert first == second == host.server.server_info_stamp == {"name": "flat", "version": "1"}
    assert first is not second


# -- over the ASGI interface ------------------------------------------------------------------------


def shapes_server() -> MCPServer:
    """Tools whose results take the short path (`plain`) and the SDK's (`odd`: a tuple and a NaN
    inside structured content; `annotated`: a text block with annotations)."""
    mcp = MCPServer("shapes", version="3.1.4")

    @mcp.tool()
    def plain(text: str) -> types.CallToolResult:
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)], structured_content={"n": 1})

    @mcp.tool()
    def odd() -> types.CallToolResult:
        return types.CallToolResult(content=[], structured_content={"pair": (1, 2), "nan": math.nan})

    @mcp.tool()
    def annotated() -> types.CallToolResult:
        block = types.TextContent(type="text", text="a", annotations=types.Annotations(priority=1.0))
        return types.CallToolResult(content=[block])

    return mcp


CALLS = [("plain", {"text": "hello"}), ("odd", {}), ("annotated", {})]


async def sdk_result(server: MCPServer, version: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    lowlevel: Server[Any] = server._lowlevel_server  # pyright: ignore[reportPrivateUsage]
    result = await server.call_tool(name, arguments)
    sdk = ServerRunner(lowlevel, Connection.from_envelope(version, None, {}), None)
    return json.loads(json.dumps(sdk._serialize("tools/call", version, result)))  # pyright: ignore[reportPrivateUsage]


@pytest.mark.anyio
async def test_modern_answers_over_asgi_are_the_sdks() -> None:
    server = shapes_server()
    with anyio.fail_after(GUARD):
        async with serving(McpApp(server, json_response=True)) as client:
            for request_id, (name, arguments) in enumerate(CALLS):
                response = await modern_post(client, request_id, "tools/call", {"name": name, "arguments": arguments})
                answer = await final_message(response)
                assert answer["result"] == await sdk_result(server, MODERN, name, arguments), name


@pytest.mark.anyio
async def test_legacy_answers_over_asgi_are_the_sdks() -> None:
    server = shapes_server()
    with anyio.fail_after(GUARD):
        async with serving(McpApp(server, json_response=True)) as client:
            session_id = await open_session(client)
            for request_id, (name, arguments) in enumerate(CALLS, start=1):
                answer = await session_call(client, session_id, call_tool(request_id, name, arguments))
                assert answer["result"] == await sdk_result(server, "2025-11-25", name, arguments), name


@pytest.mark.anyio
async def test_each_tenants_answers_carry_its_own_server_and_a_replaced_one_its_successor() -> None:
    tenants = Tenants()
    tenants.add(TOKEN_A, factory_of("alpha"), label="alpha")
    auth = {"authorization": f"Bearer {TOKEN_A}"}

    async def stamped(client: Any, request_id: int) -> dict[str, Any]:
        body, headers = modern(request_id, "tools/call", {"name": "whoami", "arguments": {}})
        response = await client.post(body, headers={**headers, **auth})
        answer = await final_message(response)
        assert (
            answer["result"]["content"][0]["text"]
            == answer["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"]
        )
        return answer["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]

    with anyio.fail_after(GUARD):
        async with serving(McpApp(tenants=tenants, json_response=True)) as client:
            assert await stamped(client, 1) == {"name": "alpha", "version": "1.0.0"}
            assert tenants.update(TOKEN_A, factory_of("alpha2"))
            assert await stamped(client, 2) == {"name": "alpha2", "version": "1.0.0"}
