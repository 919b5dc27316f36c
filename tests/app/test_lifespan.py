"""Starting and stopping: the ASGI lifespan protocol, `lifespan_context`, and shutdown with open streams."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from mcp.server import MCPServer
from mcp.server.mcpserver import Context

from asgi_mcp import ConfigurationError, McpApp
from tests.kit.mcp_servers import Probe, build_server, text_of
from tests.kit.memory import AsgiClient, Lifespan, open_session, serving, session_call
from tests.kit.messages import call_tool, initialize, request

pytestmark = pytest.mark.anyio


async def test_asgi_lifespan_protocol_runs_the_app() -> None:
    app = McpApp(build_server())
    async with anyio.create_task_group() as tg:
        lifespan = Lifespan(app, tg)
        assert await lifespan.startup() == {"type": "lifespan.startup.complete"}
        client = AsgiClient(app, tg)
        session_id = await open_session(client)
        assert (await session_call(client, session_id, request(1, "ping")))["result"] == {}
        assert await lifespan.shutdown() == {"type": "lifespan.shutdown.complete"}
        await lifespan.done.wait()
        # Stopped: sessions are gone and the app says how to run it.
        response = await client.post(request(2, "ping"), session_id=session_id)
        assert response.status == 500


async def test_without_lifespan_the_app_answers_500_naming_lifespan_context() -> None:
    app = McpApp(build_server())
    async with anyio.create_task_group() as tg:
        client = AsgiClient(app, tg)
        for _ in range(2):  # logged once, answered every time
            response = await client.post(initialize())
            assert response.status == 500
            body = await response.json()
            assert "lifespan_context" in body["error"]["message"]
            assert body["error"]["code"] == -32603


async def test_running_twice_at_once_is_a_configuration_error() -> None:
    app = McpApp(build_server())
    async with app.lifespan_context():
        with pytest.raises(ConfigurationError):
            async with app.lifespan_context():
                pass  # pragma: no cover


async def test_app_restarts_after_a_stop() -> None:
    app = McpApp(build_server())
    for _ in range(2):
        async with serving(app) as client:
            session_id = await open_session(client)
            result = await session_call(client, session_id, call_tool(1, "echo", {"text": "again"}))
            assert text_of(result["result"]) == "again"


async def test_server_lifespan_is_entered_once_and_exited_on_shutdown() -> None:
    log: list[str] = []

    @asynccontextmanager
    async def lifespan(server: MCPServer) -> AsyncIterator[dict[str, Any]]:
        log.append("enter")
        try:
            yield {"db": "connected"}
        finally:
            log.append("exit")

    server = MCPServer("lifespan-test", lifespan=lifespan)

    @server.tool()
    def db(ctx: Context) -> str:
        return str(ctx.request_context.lifespan_context["db"])

    app = McpApp(server)
    async with serving(app) as client:
        assert log == ["enter"]
        first, second = await open_session(client), await open_session(client)
        for session_id in (first, second):
            assert text_of((await session_call(client, session_id, call_tool(1, "db")))["result"]) == "connected"
        assert log == ["enter"]
    with anyio.fail_after(5):
        while log != ["enter", "exit"]:
            await anyio.wait_all_tasks_blocked()
    assert log == ["enter", "exit"]


async def test_failing_server_lifespan_fails_startup() -> None:
    @asynccontextmanager
    async def lifespan(server: MCPServer) -> AsyncIterator[None]:
        raise RuntimeError("database unreachable")
        yield  # pragma: no cover

    app = McpApp(MCPServer("broken", lifespan=lifespan))
    async with anyio.create_task_group() as tg:
        message = await Lifespan(app, tg).startup()
        assert message["type"] == "lifespan.startup.failed"
        assert "database unreachable" in message["message"]


async def test_shutdown_with_open_streams_returns_within_shutdown_timeout() -> None:
    probe = Probe()
    app = McpApp(build_server(probe), shutdown_timeout=2.0)
    async with anyio.create_task_group() as tg:
        lifespan = Lifespan(app, tg)
        assert (await lifespan.startup())["type"] == "lifespan.startup.complete"
        client = AsgiClient(app, tg)
        session_id = await open_session(client)
        stream = await client.get(session_id)
        assert stream.status == 200
        call = await client.post(call_tool(1, "block"), session_id=session_id)
        await probe.started.wait()
        started = anyio.current_time()
        shutdown_timeout = app.config.shutdown_timeout
        assert await lifespan.shutdown(timeout=shutdown_timeout + 1) == {"type": "lifespan.shutdown.complete"}
        assert anyio.current_time() - started < shutdown_timeout
        # Every open connection ended: the GET stream and the POST stream of the running call.
        await stream.read(timeout=1)
        await call.read(timeout=1)
        assert probe.cancelled.is_set()
        assert probe.results == []
        with anyio.fail_after(1):
            await lifespan.done.wait()
            await stream.app_done.wait()
            await call.app_done.wait()


async def test_shutdown_is_idempotent_and_harmless_when_repeated() -> None:
    app = McpApp(build_server())
    async with app.lifespan_context():
        runtime = app._runtime
        assert runtime is not None
    # The context already shut the runtime down; doing it again changes nothing and raises nothing.
    runtime.shutdown()
    assert app._runtime is None
    async with serving(app) as client:  # and the app still starts afresh
        await open_session(client)


async def test_requests_after_shutdown_start_no_sessions() -> None:
    app = McpApp(build_server())
    async with anyio.create_task_group() as tg:
        client = AsgiClient(app, tg)
        async with app.lifespan_context():
            await open_session(client)
        response = await client.post(initialize())
        assert response.status == 500
        assert response.session_id is None


@pytest.mark.anyio
async def test_gc_freeze_is_opt_in() -> None:
    import gc

    from mcp.server import Server

    gc.unfreeze()
    try:
        async with McpApp(Server("plain")).lifespan_context():
            assert gc.get_freeze_count() == 0
        async with McpApp(Server("frozen"), gc_freeze=True).lifespan_context():
            assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
