"""The modern (2026-07-28, sessionless) era through the real ASGI interface, on asyncio and Trio."""

from __future__ import annotations

import json
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.server import Server
from mcp.shared.inbound import validate_mcp_param_headers

from asgi_mcp import Headers, McpApp
from asgi_mcp._core.asgi import HttpRequest
from asgi_mcp._modern.param_headers import RawHeaders
from tests.kit.mcp_servers import (
    SECRET,
    Probe,
    auth_middleware,
    build_failing_server,
    build_server,
    tenant_middleware,
    text_of,
)
from tests.kit.memory import AsgiClient, final_message, modern_post, serving
from tests.kit.messages import MODERN, modern, notification

pytestmark = pytest.mark.anyio


def app_for(probe: Probe | None = None, **options: Any) -> McpApp:
    return McpApp(build_server(probe), **options)


def tool(name: str, arguments: dict[str, Any] | None = None, progress_token: Any = None) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name, "arguments": arguments or {}}
    if progress_token is not None:
        params["_meta"] = {"progressToken": progress_token}
    return params


async def test_tool_call_answers_with_json() -> None:
    async with serving(app_for()) as client:
        response = await modern_post(client, 1, "tools/call", tool("echo", {"text": "hi"}))
        assert response.status == 200
        assert response.content_type == "application/json"
        assert response.session_id is None  # no sessions in this era
        body = await response.json()
        assert body["id"] == 1
        assert text_of(body["result"]) == "hi"
        assert body["result"]["resultType"] == "complete"


async def test_server_discover() -> None:
    async with serving(app_for()) as client:
        response = await modern_post(client, "d", "server/discover")
        assert response.status == 200
        result = (await response.json())["result"]
        assert MODERN in result["supportedVersions"]
        assert "tools" in result["capabilities"]


async def test_tools_list() -> None:
    async with serving(app_for()) as client:
        body = await (await modern_post(client, 2, "tools/list")).json()
        assert "region_echo" in {t["name"] for t in body["result"]["tools"]}


async def test_notifications_stream_as_sse_before_the_result() -> None:
    async with serving(app_for()) as client:
        response = await modern_post(client, 3, "tools/call", tool("progress", {"steps": 2}, progress_token=9))
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        assert response.header("x-accel-buffering") == "no"
        messages = await response.messages()
        assert [m.get("method") for m in messages[:-1]] == ["notifications/progress", "notifications/message"] * 2
        assert all(e["params"]["progressToken"] == 9 for e in messages if e.get("method") == "notifications/progress")
        assert messages[-1]["id"] == 3
        assert text_of(messages[-1]["result"]) == "done 2"
        events = [e for e in (response.body.split(b"\n\n")) if e]
        assert not any(e.startswith(b"id:") for e in events)  # no event ids on this era


async def test_json_response_mode_drops_notifications() -> None:
    async with serving(app_for(json_response=True)) as client:
        response = await modern_post(
            client, 3, "tools/call", tool("progress", {"steps": 2}, progress_token=9), accept="application/json"
        )
        assert response.content_type == "application/json"
        assert text_of((await response.json())["result"]) == "done 2"


async def test_missing_mcp_method_is_header_mismatch() -> None:
    async with serving(app_for()) as client:
        body, headers = modern(1, "tools/list")
        del headers["mcp-method"]
        response = await client.post(body, headers=headers)
        assert response.status == 400
        error = await response.json()
        assert error["id"] == 1
        assert error["error"]["code"] == -32020


@pytest.mark.parametrize(("header", "value"), [("mcp-method", "tools/list"), ("mcp-name", "other")])
async def test_routing_header_disagreeing_with_the_body_is_header_mismatch(header: str, value: str) -> None:
    async with serving(app_for()) as client:
        body, headers = modern(1, "tools/call", tool("echo", {"text": "x"}))
        headers[header] = value
        response = await client.post(body, headers=headers)
        assert response.status == 400
        assert (await response.json())["error"]["code"] == -32020


async def test_the_version_header_picks_the_era() -> None:
    """A modern-shaped body under a legacy version header is a legacy request: it needs a session."""
    async with serving(app_for()) as client:
        body, headers = modern(1, "tools/call", tool("echo", {"text": "x"}))
        response = await client.post(body, headers={**headers, "mcp-protocol-version": "2025-11-25"})
        assert response.status == 400


async def test_duplicated_routing_header_is_header_mismatch() -> None:
    async with serving(app_for()) as client:
        body, headers = modern(1, "tools/list")
        items = [
            *headers.items(),
            ("mcp-method", "tools/list"),
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
        ]
        response = await client.request("POST", headers=items, body=json.dumps(body).encode())
        assert response.status == 400
        assert (await response.json())["error"]["code"] == -32020


async def test_unknown_method_is_404_minus_32601() -> None:
    async with serving(app_for()) as client:
        response = await modern_post(client, 4, "no/such/method")
        assert response.status == 404
        error = await response.json()
        assert error["id"] == 4
        assert error["error"]["code"] == -32601


async def test_unsupported_version_is_400_minus_32022_naming_the_request() -> None:
    async with serving(app_for()) as client:
        body, headers = modern(5, "tools/list")
        headers["mcp-protocol-version"] = "2099-01-01"
        response = await client.post(body, headers=headers)
        assert response.status == 400
        error = await response.json()
        assert error["error"]["code"] == -32022
        assert error["id"] == 5
        assert MODERN in error["error"]["data"]["supported"]


async def test_missing_meta_envelope_is_refused() -> None:
    async with serving(app_for()) as client:
        headers = {"mcp-protocol-version": MODERN, "mcp-method": "tools/list"}
        response = await client.post({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers=headers)
        assert response.status == 400
        assert (await response.json())["error"]["code"] == -32602


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_get_and_delete_are_405(method: str) -> None:
    async with serving(app_for()) as client:
        headers = {"mcp-protocol-version": MODERN, "accept": "text/event-stream", "mcp-session-id": "whatever"}
        response = await client.request(method, headers=headers)
        assert response.status == 405
        assert response.header("allow") == "POST"


async def test_notifications_are_acknowledged_and_responses_refused() -> None:
    async with serving(app_for()) as client:
        headers = {"mcp-protocol-version": MODERN}
        assert (
            await client.post(notification("notifications/cancelled", {"requestId": 1}), headers=headers)
        ).status == 202
        refused = await client.post({"jsonrpc": "2.0", "id": 1, "result": {}}, headers=headers)
        assert refused.status == 400


async def test_session_header_is_ignored() -> None:
    async with serving(app_for()) as client:
        body, headers = modern(1, "tools/call", tool("echo", {"text": "x"}))
        headers["mcp-session-id"] = "made-up"
        response = await client.post(body, headers=headers)
        assert response.status == 200
        assert response.session_id is None


async def test_accept_must_allow_json() -> None:
    async with serving(app_for()) as client:
        response = await modern_post(client, 1, "tools/list", accept="text/event-stream")
        assert response.status == 406


@pytest.mark.parametrize("streamed", [False, True], ids=["before-any-byte", "mid-sse"])
async def test_client_disconnect_cancels_the_handler(streamed: bool) -> None:
    """2026-07-28: closing the response stream is cancellation."""
    probe = Probe()
    async with serving(app_for(probe)) as client:
        response = await modern_post(
            client, 6, "tools/call", tool("block", progress_token=1 if streamed else None), wait=streamed
        )
        await probe.started.wait()
        if streamed:
            assert response.content_type == "text/event-stream"
            assert (await response.next_message())["params"]["message"] == "blocking"
        response.disconnect()
        with anyio.fail_after(5):
            await probe.cancelled.wait()
            await probe.finished.wait()
            await response.app_done.wait()
        assert probe.results == []


@pytest.mark.parametrize("progress_token", [None, 1])
async def test_a_silent_handler_commits_to_sse_and_gets_keepalives(progress_token: int | None) -> None:
    """Silent for a keep-alive interval (from the start, or after its first notification): comment lines."""
    probe = Probe()
    async with serving(app_for(probe, keepalive_interval=0.05)) as client:
        response = await modern_post(client, 7, "tools/call", tool("block", progress_token=progress_token))
        assert response.content_type == "text/event-stream"
        await probe.started.wait()
        await response.next_comment()
        await response.next_comment()
        probe.release.set()
        messages = await response.messages()
        assert [m.get("method") for m in messages[:-1]] == (["notifications/progress"] if progress_token else [])
        assert text_of(messages[-1]["result"]) == "released"


async def test_param_header_must_match_the_argument() -> None:
    async with serving(app_for()) as client:
        body, headers = modern(1, "tools/call", tool("region_echo", {"region": "eu-west"}))
        ok = await client.post(body, headers={**headers, "mcp-param-region": "eu-west"})
        assert ok.status == 200
        assert text_of((await ok.json())["result"]) == "region=eu-west"
        for bad in ({"mcp-param-region": "us-east"}, {}):
            response = await client.post(body, headers={**headers, **bad})
            assert response.status == 400
            error = await response.json()
            assert error["id"] == 1
            assert error["error"]["code"] == -32020
        # A base64 sentinel value decodes before the comparison.
        encoded = await client.post(body, headers={**headers, "mcp-param-region": "=?base64?ZXUtd2VzdA==?="})
        assert encoded.status == 200


# Listed by a low-level server (no `get_tool_input_schema`), so schemas come from the cached tools/list.
PARAM_SCHEMAS: dict[str, dict[str, Any]] = {
    "plain": {"type": "object", "properties": {"region": {"type": "string"}}},
    "routed": {"type": "object", "properties": {"region": {"type": "string", "x-mcp-header": "Region"}}},
    # `number` may not carry the annotation: the whole schema is then left unvalidated.
    "misannotated": {"type": "object", "properties": {"region": {"type": "number", "x-mcp-header": "Region"}}},
}


def build_param_server() -> Server[Any]:
    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        tools = [types.Tool(name=name, input_schema=schema) for name, schema in PARAM_SCHEMAS.items()]
        return types.ListToolsResult(tools=tools)

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        return types.CallToolResult(content=[types.TextContent(type="text", text=params.name)])

    return Server("params", version="1.0.0", on_list_tools=list_tools, on_call_tool=call_tool)


@pytest.mark.parametrize("ttl", [5.0, 0.0])
@pytest.mark.parametrize(
    ("name", "arguments", "param_headers", "status"),
    [
        ("routed", {"region": "eu"}, [("mcp-param-region", "eu")], 200),
        ("routed", {"region": "eu"}, [("mcp-param-region", "us")], 400),
        ("routed", {"region": "eu"}, [], 400),
        ("routed", {}, [("mcp-param-region", "eu")], 400),
        ("routed", {"region": "eu"}, [("mcp-param-region", "eu"), ("mcp-param-region", "eu")], 400),
        ("routed", {"region": "eu"}, [("mcp-param-region", "eu"), ("mcp-param-other", "x")], 200),
        # No annotation: no header is compared, and stray Mcp-Param-* headers are not refused.
        ("plain", {"region": "eu"}, [], 200),
        ("plain", {"region": "eu"}, [("mcp-param-region", "us")], 200),
        ("plain", {"region": "eu"}, [("mcp-param-region", "eu"), ("mcp-param-region", "us")], 200),
        ("plain", {}, [("mcp-param-region", "eu")], 200),
        ("misannotated", {"region": 1}, [("mcp-param-region", "2")], 200),
        ("unlisted", {"region": "eu"}, [("mcp-param-region", "us")], 200),
    ],
)
async def test_param_headers_from_the_listed_schema_agree_with_the_sdk(
    ttl: float, name: str, arguments: dict[str, Any], param_headers: list[tuple[str, str]], status: int
) -> None:
    lines = Headers([(key.encode(), value.encode()) for key, value in param_headers])
    oracle = validate_mcp_param_headers(
        PARAM_SCHEMAS.get(name), arguments, RawHeaders(HttpRequest("POST", "/mcp", lines, {"type": "http"}))
    )
    assert (oracle is None) == (status == 200)  # the SDK's own verdict, which the endpoint must keep
    async with serving(McpApp(build_param_server(), tool_schema_ttl=ttl)) as client:
        body, headers = modern(1, "tools/call", tool(name, arguments))
        for _ in range(2):  # the second call is answered from the cached listing when ttl > 0
            items = [("content-type", "application/json"), ("accept", "application/json, text/event-stream")]
            all_headers = [*items, *headers.items(), *param_headers]
            response = await client.request("POST", headers=all_headers, body=json.dumps(body).encode())
            answer = await response.json()
            if status == 400:
                assert (response.status, answer["error"]["code"]) == (400, -32020)
            else:
                assert (response.status, text_of(answer["result"])) == (200, name)


async def test_handlers_see_request_headers() -> None:
    async with serving(app_for()) as client:
        body, headers = modern(1, "tools/call", tool("read_header", {"name": "X-Custom"}))
        response = await client.post(body, headers={**headers, "x-custom": "v2"})
        assert text_of((await final_message(response))["result"]) == "v2|v2"


async def test_middleware_contextvars_reach_handlers() -> None:
    app = app_for()
    async with app.lifespan_context(), anyio.create_task_group() as tg:
        client = AsgiClient(auth_middleware(tenant_middleware(app)), tg)
        for tenant, client_id in (("acme", "alice"), ("globex", "bob")):
            body, headers = modern(1, "tools/call", tool("whoami"))
            extra = {"x-tenant": tenant, "authorization": f"Bearer {client_id}"}
            response = await client.post(body, headers={**headers, **extra})
            assert text_of((await final_message(response))["result"]) == f"tenant={tenant} client={client_id}"
        # Also on the streamed path, where the handler runs in a task of its own.
        body, headers = modern(2, "tools/call", {**tool("whoami"), "_meta": {"progressToken": 1}})
        response = await client.post(body, headers={**headers, "x-tenant": "initech"})
        assert text_of((await final_message(response))["result"]) == "tenant=initech client=None"
        tg.cancel_scope.cancel()


async def test_unexpected_exception_is_an_error_without_internals() -> None:
    async with serving(McpApp(build_failing_server())) as client:
        response = await modern_post(client, 1, "tools/call", {"name": "explode", "arguments": {}})
        body = await response.read()
        answer = await final_message(response)
        assert answer["id"] == 1
        assert answer["error"]["code"] == -32603
        assert SECRET.encode() not in body
        assert b"RuntimeError" not in body
