"""End to end: real ASGI servers on 127.0.0.1, driven by the SDK's own client (both eras) and by httpx.

uvicorn runs on asyncio only and hypercorn's Trio worker on Trio only; each test is parametrized
over the servers and skips the combination its server cannot run on. granian runs the app on
asyncio in a process of its own (the `granian` command), so its tests run the client on both
backends.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.context import ClientRequestContext
from mcp.server import MCPServer
from mcp.server.mcpserver import Context

from asgi_mcp import InMemoryEventStore, McpApp
from tests.kit.builtin import PARSERS, builtin_server
from tests.kit.mcp_servers import Probe, build_server
from tests.kit.messages import LEGACY, MODERN, initialize, notification, request
from tests.kit.polling import wait_until
from tests.kit.raw_http import connect, http_request
from tests.kit.real_servers import SERVERS, granian_server
from tests.kit.sse import SSEDecoder

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


GRANIAN = "granian"


@pytest.fixture(params=[*sorted(SERVERS), GRANIAN])
def server_name(request: pytest.FixtureRequest, anyio_backend: str) -> str:
    name: str = request.param
    if name == GRANIAN:  # a process of its own: the client's backend is free
        return name
    backend = SERVERS[name][0]
    if anyio_backend != backend:
        pytest.skip(f"{name} serves on {backend} only")
    return name


@asynccontextmanager
async def live(
    server_name: str, probe: Probe | None = None, *, event_store: bool = False, **options: Any
) -> AsyncIterator[str]:
    """The app served by a real server; yields the endpoint URL. Under granian the app and its probe
    live in granian's process (tests/kit/granian_app.py), so `options` must be JSON."""
    if server_name == GRANIAN:
        async with granian_server({**options, "event_store": event_store}) as base_url:
            yield f"{base_url}/mcp"
        return
    if event_store:
        options["event_store"] = InMemoryEventStore()
    app = McpApp(build_server(probe), **options)
    async with SERVERS[server_name][1](app) as base_url:
        yield f"{base_url}/mcp"


def text(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


async def test_sdk_client_legacy_session(server_name: str) -> None:
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    async def on_elicit(context: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
        return types.ElicitResult(action="accept", content={"answer": "42"})

    async with live(server_name, event_store=True) as url:
        with anyio.fail_after(20):
            async with Client(url, mode="legacy", elicitation_callback=on_elicit) as client:
                assert client.protocol_version == LEGACY
                tools = await client.list_tools()
                assert {"echo", "progress", "ask"} <= {tool.name for tool in tools.tools}
                assert text(await client.call_tool("echo", {"text": "über"})) == "über"
                result = await client.call_tool("progress", {"steps": 3}, progress_callback=on_progress)
                assert text(result) == "done 3"
                assert [p[0] for p in progress] == [1, 2, 3]
                assert progress[-1] == (3, 3, "step 3")
                # A server-to-client request on the POST stream, answered by the client's callback.
                assert text(await client.call_tool("ask")) == "accept:42"


async def test_sdk_client_modern_mode(server_name: str) -> None:
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async with live(server_name) as url:
        with anyio.fail_after(20):
            async with Client(url, mode=MODERN) as client:
                assert client.protocol_version == MODERN
                tools = await client.list_tools()
                assert "region_echo" in {tool.name for tool in tools.tools}
                assert text(await client.call_tool("echo", {"text": "hi"})) == "hi"
                result = await client.call_tool("progress", {"steps": 2}, progress_callback=on_progress)
                assert text(result) == "done 2"
                assert progress == [1, 2]
                # The client mirrors `region` into Mcp-Param-Region; the server checks it against the body.
                assert text(await client.call_tool("region_echo", {"region": "eu-west"})) == "region=eu-west"


async def test_sdk_client_auto_mode_discovers_the_modern_era(server_name: str) -> None:
    async with live(server_name) as url:
        with anyio.fail_after(20):
            async with Client(url) as client:
                assert client.protocol_version == MODERN
                assert text(await client.call_tool("echo", {"text": "auto"})) == "auto"


HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}


async def test_raw_http_checks(server_name: str) -> None:
    async with live(server_name, max_body_size=4096) as url, httpx.AsyncClient(timeout=10) as http:
        init = await http.post(url, json=initialize(), headers=HEADERS)
        assert init.status_code == 200
        assert init.headers["content-type"].startswith("text/event-stream")
        [event] = SSEDecoder().feed(init.content)
        assert json.loads(event.data)["result"]["protocolVersion"] == LEGACY
        session_id = init.headers["mcp-session-id"]
        session = {**HEADERS, "mcp-session-id": session_id, "mcp-protocol-version": LEGACY}
        acked = await http.post(url, json=notification("notifications/initialized"), headers=session)
        assert acked.status_code == 202
        assert acked.content == b""

        # A real server puts its loopback address in scope["server"]: DNS rebinding is refused.
        assert (
            await http.post(url, json=initialize(), headers={**HEADERS, "host": "evil.example.com"})
        ).status_code == 421
        evil_origin = {**HEADERS, "origin": "http://evil.example.com"}
        assert (await http.post(url, json=initialize(), headers=evil_origin)).status_code == 403

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b" " * 1000  # 10 kB, chunked transfer encoding, no content-length

        # On a connection of its own: the rest of the body is never read, so the server may hang up
        # after answering (h11-based servers do), and a pooled connection would race that.
        async with httpx.AsyncClient(timeout=10) as oneshot:
            too_big = await oneshot.post(url, content=chunks(), headers=session)
        assert too_big.status_code == 413
        assert (await http.post(url, content=b"{", headers=session)).json()["error"]["code"] == -32700
        assert (await http.put(url, content=b"{}", headers=session)).status_code == 405
        assert (await http.post(url.removesuffix("/mcp") + "/other", json={}, headers=HEADERS)).status_code == 404

        # The standalone GET stream opens, a second one conflicts, DELETE ends the session.
        async with http.stream(
            "GET", url, headers={"accept": "text/event-stream", "mcp-session-id": session_id}
        ) as get:
            assert get.status_code == 200
            second = await http.get(url, headers={"accept": "text/event-stream", "mcp-session-id": session_id})
            assert second.status_code == 409
            assert (await http.delete(url, headers={"mcp-session-id": session_id})).status_code == 200
            # The session's end closes the stream too.
            with anyio.fail_after(5):
                async for _ in get.aiter_bytes():
                    pass
        gone = await http.post(url, json=request(9, "ping"), headers=session)
        assert gone.status_code == 404


async def test_modern_disconnect_cancels_the_handler(server_name: str) -> None:
    """Closing the response of a 2026-07-28 request over a real socket cancels its handler."""
    probe = Probe()
    async with live(server_name, probe) as url, httpx.AsyncClient(timeout=10) as http:
        meta = {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {},
            "progressToken": 1,
        }
        body = request(1, "tools/call", {"name": "block", "arguments": {}, "_meta": meta})
        headers = {**HEADERS, "mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": "block"}
        with anyio.fail_after(10):
            async with http.stream("POST", url, json=body, headers=headers) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                async for chunk in response.aiter_bytes():
                    if b"blocking" in chunk:
                        break
                if server_name != GRANIAN:
                    await probe.started.wait()
            # Leaving the block closed the connection.
            if server_name == GRANIAN:  # the probe is in granian's process: a tool there reads it
                async with Client(url, mode=MODERN) as client:
                    assert text(await client.call_tool("await_cancelled")) == "cancelled results=[]"
            else:
                await probe.cancelled.wait()
                assert probe.results == []


@pytest.mark.parametrize("parser", PARSERS)
async def test_a_get_stream_whose_client_left_unseen_ends_quietly(
    parser: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A GET stream's client leaves while the server no longer reads its socket (32 KiB already read
    ahead), so only a failed send tells: its keep-alive comment's `OSError` (ASGI 2.4) ends the
    stream, with nothing logged as an error and the session's GET free again."""
    app = McpApp(build_server(), keepalive_interval=0.05)
    async with builtin_server(app, parser) as address, httpx.AsyncClient(timeout=10) as http:
        init = await http.post(address.url + "/mcp", json=initialize(), headers=HEADERS)
        session_id = init.headers["mcp-session-id"]
        session = {**HEADERS, "mcp-session-id": session_id, "mcp-protocol-version": LEGACY}
        await http.post(address.url + "/mcp", json=notification("notifications/initialized"), headers=session)
        headers = [
            ("host", f"127.0.0.1:{address.port}"),
            ("accept", "text/event-stream"),
            ("mcp-session-id", session_id),
        ]
        caplog.set_level(logging.ERROR)
        async with connect(address.port) as gone:
            gone.expect("GET")
            await gone.send(http_request("GET", headers, b"") + b"x" * (64 * 1024))  # read ahead, never parsed
            assert await gone.head() is not None
            await wait_until(lambda: app.stats()["open_streams"] == 1)
        with anyio.fail_after(20):
            await wait_until(lambda: app.stats()["open_streams"] == 0, timeout=20)
        assert [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR] == []
        async with http.stream(
            "GET", address.url + "/mcp", headers={"accept": "text/event-stream", "mcp-session-id": session_id}
        ) as again:
            assert again.status_code == 200


@pytest.mark.parametrize("parser", PARSERS)
async def test_a_legacy_answer_nobody_reads_ends_at_the_builtin_servers_write_timeout(parser: str) -> None:
    """The built-in server bounds every send (`SEND_TIMEOUT_EXTENSION`), so the app leaves a client that
    stopped reading to it: with a keep-alive interval of an hour, the ticker abandons nothing, yet the
    handler's notifications (sent under its shield) fail at the server's write timeout, the handler
    finishes, and the answer's stream is closed with the session kept."""
    mcp = MCPServer("loud")
    shouted = anyio.Event()

    @mcp.tool()
    async def shout(ctx: Context) -> str:
        """64 notifications of 1 MiB each: far more than the sockets' buffers hold."""
        rc = ctx.request_context
        for _ in range(64):
            params = types.LoggingMessageNotificationParams(level="info", data="x" * (1 << 20), logger="loud")
            notice = types.LoggingMessageNotification(params=params)
            await rc.session.send_notification(notice, related_request_id=rc.request_id)
        shouted.set()
        return "shouted"

    app = McpApp(mcp, keepalive_interval=3600)
    async with builtin_server(app, parser, write_timeout=0.5) as address, httpx.AsyncClient(timeout=10) as http:
        init = await http.post(address.url + "/mcp", json=initialize(), headers=HEADERS)
        session_id = init.headers["mcp-session-id"]
        session = {**HEADERS, "mcp-session-id": session_id, "mcp-protocol-version": LEGACY}
        await http.post(address.url + "/mcp", json=notification("notifications/initialized"), headers=session)
        body = json.dumps(request(1, "tools/call", {"name": "shout", "arguments": {}})).encode()
        headers = [("host", f"127.0.0.1:{address.port}"), *session.items(), ("content-length", str(len(body)))]
        async with connect(address.port) as silent:
            await silent.send(http_request("POST", headers, body))  # and never reads
            with anyio.fail_after(20):
                await shouted.wait()
                await wait_until(lambda: app.stats()["open_streams"] == 0)
        assert app.stats()["active_sessions"] == 1
        pong = await http.post(address.url + "/mcp", json=request(2, "ping"), headers=session)
        assert pong.status_code == 200
