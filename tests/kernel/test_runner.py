"""Served requests and ended sessions are freed by reference counting (`_kernel`), through real ASGI.

A request or session that leaves a reference cycle behind costs nothing at once, but under load
the cycle collector then runs every few dozen requests and promotes whatever is in flight into the
old generation, whose full collections (tens of ms) were the p99 of modern JSON and session churn.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest
from mcp import types
from mcp.server import Server
from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.server.runner import ServerRunner

from asgi_mcp import McpApp
from asgi_mcp._kernel.runner import runner_request_handler
from asgi_mcp._legacy.dispatcher import SessionDispatcher
from asgi_mcp._legacy.session import LegacySession
from tests.kit.mcp_servers import Probe, build_server, text_of
from tests.kit.memory import final_message, modern_post, open_session, serving, session_call
from tests.kit.messages import MODERN, call_tool
from tests.kit.polling import wait_until

pytestmark = pytest.mark.anyio

KERNEL_TYPES = (LegacySession, SessionDispatcher, Connection, ServerRunner)


@contextmanager
def cycles_left_behind() -> Iterator[Counter[str]]:
    """Counts, by type, the objects of `KERNEL_TYPES` that only the cycle collector could free."""
    gc.collect()
    found: Counter[str] = Counter()
    gc.disable()
    try:
        yield found
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        found.update(type(obj).__name__ for obj in gc.garbage if isinstance(obj, KERNEL_TYPES))
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


async def test_modern_requests_leave_no_cycles() -> None:
    async with serving(McpApp(build_server())) as client:
        with cycles_left_behind() as left:
            for request_id in range(20):
                params = {"name": "echo", "arguments": {"text": "hi"}}
                response = await modern_post(client, request_id, "tools/call", params)
                assert text_of((await final_message(response))["result"]) == "hi"
        assert left == Counter()


@pytest.mark.parametrize("json_response", [False, True])
async def test_ended_sessions_leave_no_cycles(json_response: bool) -> None:
    async with serving(McpApp(build_server(), json_response=json_response)) as client:
        with cycles_left_behind() as left:
            for request_id in range(10):
                session_id = await open_session(client)
                answer = await session_call(client, session_id, call_tool(request_id, "echo", {"text": "hi"}))
                assert text_of(answer["result"]) == "hi"
                assert (await client.delete(session_id)).status == 200
        assert left == Counter()


async def test_a_session_ended_mid_request_leaves_no_cycles() -> None:
    probe = Probe()
    async with serving(McpApp(build_server(probe), json_response=True)) as client:
        with cycles_left_behind() as left:
            session_id = await open_session(client)
            async with anyio.create_task_group() as tg:
                answers: list[dict[str, Any]] = []

                async def blocked_call() -> None:
                    response = await client.post(call_tool(1, "block"), session_id=session_id)
                    answers.append(await response.json())

                tg.start_soon(blocked_call)
                await probe.started.wait()
                assert (await client.delete(session_id)).status == 200
            assert answers[0]["error"]["message"] == "Session closed"
            assert probe.cancelled.is_set()
        assert left == Counter()


def cleanup_server(cleaned: list[str]) -> Server[Any]:
    """A low-level server whose tool registers per-connection cleanup on the connection's exit stack.

    mcp 2.3 hands a handler no public route to its `Connection`; `ServerSession` holds it.
    """

    async def list_tools(ctx: ServerRequestContext[Any], params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[types.Tool(name="register", input_schema={"type": "object"})])

    async def call(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        connection: Connection = ctx.session._connection  # pyright: ignore[reportPrivateUsage]
        tag = f"{connection.protocol_version}:{ctx.request_id}"

        async def clean() -> None:
            await anyio.lowlevel.checkpoint()
            cleaned.append(tag)

        connection.exit_stack.push_async_callback(clean)
        return types.CallToolResult(content=[types.TextContent(type="text", text=tag)])

    return Server("cleanup", version="1.0.0", on_list_tools=list_tools, on_call_tool=call)


async def test_connection_cleanup_runs_after_a_modern_request() -> None:
    cleaned: list[str] = []
    async with serving(McpApp(cleanup_server(cleaned))) as client:
        response = await modern_post(client, 7, "tools/call", {"name": "register", "arguments": {}})
        tag = text_of((await final_message(response))["result"])
        assert cleaned == [tag]  # before the answer was sent


async def test_connection_cleanup_runs_when_a_session_ends() -> None:
    cleaned: list[str] = []
    async with serving(McpApp(cleanup_server(cleaned))) as client:
        session_id = await open_session(client)
        tag = text_of((await session_call(client, session_id, call_tool(3, "register")))["result"])
        assert cleaned == []  # the session is still open
        assert (await client.delete(session_id)).status == 200
        await wait_until(lambda: cleaned == [tag])


def test_the_runners_request_handler_is_the_one_it_publishes() -> None:
    """`serve_one` reads the method behind `ServerRunner.on_request` (uncached): while that property
    hands back that very method, the two are the same handler."""
    runner = ServerRunner(build_server(), Connection.from_envelope(MODERN, None, {}), None)
    assert runner_request_handler(runner) == runner.on_request
