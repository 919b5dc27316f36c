"""Era negotiation (`asgi_mcp._app.negotiation`) over the ASGI interface, on asyncio and Trio: which
endpoint a request reaches, by `MCP-Protocol-Version`, method, `Accept` and `Content-Type`, and the
precise refusal when it may reach none."""

from __future__ import annotations

from typing import Final

import anyio
import pytest
from mcp.server import MCPServer

from asgi_mcp import McpApp
from tests.kit.memory import Response, modern_post, open_session, serving
from tests.kit.messages import LEGACY, MODERN, initialize, request

pytestmark = pytest.mark.anyio

GUARD: Final = 10.0


def app() -> McpApp:
    mcp = MCPServer("negotiation-test", version="1.0.0")

    @mcp.tool()
    def echo(text: str) -> str:
        return text

    return McpApp(mcp, json_response=True)


async def answer(response: Response) -> tuple[int, dict[str, object]]:
    await response.read()
    return response.status, await response.json()


async def test_no_version_and_legacy_versions_reach_the_legacy_endpoint() -> None:
    with anyio.fail_after(GUARD):
        async with serving(app()) as client:
            opened = [await client.post(initialize(0, version), version=None) for version in (LEGACY, "2025-03-26")]
            for response in opened:
                await response.read()
    # Only the legacy era opens sessions.
    assert [(r.status, r.session_id is not None) for r in opened] == [(200, True), (200, True)]


async def test_a_modern_version_reaches_the_stateless_endpoint() -> None:
    with anyio.fail_after(GUARD):
        async with serving(app()) as client:
            response = await modern_post(client, 7, "tools/list")
            status, body = await answer(response)
    assert status == 200
    assert response.session_id is None
    assert body["id"] == 7
    assert [tool["name"] for tool in body["result"]["tools"]] == ["echo"]


async def test_a_bad_version_on_a_post_names_the_request_id() -> None:
    with anyio.fail_after(GUARD):
        async with serving(app()) as client:
            status, body = await answer(await client.post(request(42, "tools/list"), version="not-a-version"))
    assert status == 400
    assert body["id"] == 42
    assert "error" in body


@pytest.mark.parametrize(
    ("content_type", "accept", "version", "status"),
    [
        ("text/plain", "application/json", None, 415),
        ("text/plain", "application/json", MODERN, 415),
        ("application/json", "text/event-stream", None, 406),
        ("application/json", "text/event-stream", LEGACY, 406),
    ],
)
async def test_post_media_types_are_checked(content_type: str, accept: str, version: str | None, status: int) -> None:
    headers = {"content-type": content_type}
    with anyio.fail_after(GUARD):
        async with serving(app()) as client:
            got, body = await answer(await client.post(initialize(1), accept=accept, version=version, headers=headers))
    assert got == status
    assert body["error"]["code"] < 0


async def test_get_and_delete_exist_only_in_the_legacy_era() -> None:
    with anyio.fail_after(GUARD):
        async with serving(app()) as client:
            session_id = await open_session(client)
            modern_get = await client.get(session_id, version=MODERN)
            modern_delete = await client.request(
                "DELETE", headers={"mcp-session-id": session_id, "mcp-protocol-version": MODERN}
            )
            json_only_get = await client.get(session_id, accept="application/json")
            put = await client.request("PUT", headers={"mcp-protocol-version": MODERN})
            legacy_delete = await client.delete(session_id)
            for response in (modern_get, modern_delete, json_only_get, put, legacy_delete):
                await response.read()
    assert (modern_get.status, modern_get.header("allow")) == (405, "POST")
    assert (modern_delete.status, modern_delete.header("allow")) == (405, "POST")
    assert json_only_get.status == 406
    assert (put.status, put.header("allow")) == (405, "GET, POST, DELETE")
    assert legacy_delete.status in (200, 204)


async def test_a_malformed_version_is_reported_before_the_method() -> None:
    with anyio.fail_after(GUARD):
        async with serving(app()) as client:
            response = await client.request("PATCH", headers={"mcp-protocol-version": "garbage"})
            await response.read()
            no_version = await client.request("PATCH")
            await no_version.read()
    assert response.status == 400
    assert (no_version.status, no_version.header("allow")) == (405, "GET, POST, DELETE")
