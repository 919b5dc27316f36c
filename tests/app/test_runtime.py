"""The app's runtime (`asgi_mcp._app.runtime`), on asyncio and Trio: what one run builds from the
config, a fresh server host per run, the reaper's wake-ups, and shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import anyio
import pytest
from anyio.lowlevel import checkpoint
from mcp.server import MCPServer

from asgi_mcp import McpApp, SessionEnded
from tests.kit.memory import open_session, serving

pytestmark = pytest.mark.anyio

GUARD: Final = 10.0


def counted_server(runs: list[str]) -> MCPServer:
    @asynccontextmanager
    async def lifespan(server: Any) -> AsyncIterator[dict[str, Any]]:
        runs.append("enter")
        try:
            yield {}
        finally:
            runs.append("exit")

    return MCPServer("runtime-test", version="1.0.0", lifespan=lifespan)


async def test_each_run_builds_its_own_runtime_and_server_host_from_the_config() -> None:
    runs: list[str] = []
    app = McpApp(counted_server(runs), max_sessions=3, max_body_size=1234, session_idle_timeout=None)
    seen: list[Any] = []
    with anyio.fail_after(GUARD):
        for _ in range(2):
            async with app.lifespan_context():
                runtime = app._runtime
                assert runtime is not None
                seen.append((runtime, runtime.host))
                assert runtime.max_body_size == 1234
                assert runtime.table.max_sessions == 3
                assert app.stats()["built_servers"] == 1
    (first, first_host), (second, second_host) = seen
    assert first is not second
    assert first_host is not second_host
    assert first_host is not None
    assert first_host.server is second_host.server is app.config.server
    # The server's lifespan is entered once per run, and left at each run's end.
    assert runs == ["enter", "exit", "enter", "exit"]


async def test_the_reaper_is_woken_only_for_an_earlier_deadline() -> None:
    app = McpApp(MCPServer("runtime-test", version="1.0.0"))
    with anyio.fail_after(GUARD):
        async with app.lifespan_context():
            runtime = app._runtime
            assert runtime is not None
            await anyio.wait_all_tasks_blocked()  # the reaper sleeps until its next wake-up
            wakes_at = runtime.reaper_wakes_at
            assert wakes_at < float("inf")
            runtime.wake(wakes_at + 1)
            assert not runtime.wake_reaper.is_set()
            runtime.wake(wakes_at - 1)
            assert runtime.wake_reaper.is_set()
            await anyio.wait_all_tasks_blocked()  # it ran, and sleeps again on a fresh event
            assert not runtime.wake_reaper.is_set()
            runtime.wake()
            assert runtime.wake_reaper.is_set()


async def test_shutdown_ends_every_session_once_and_refuses_new_work() -> None:
    app = McpApp(MCPServer("runtime-test", version="1.0.0"), shutdown_timeout=GUARD)
    ended: list[SessionEnded] = []
    app.on("session_ended", ended.append)
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            sessions = {await open_session(client) for _ in range(3)}
            runtime = app._runtime
            assert runtime is not None
            assert app.running
            runtime.shutdown()
            runtime.shutdown()  # the second call changes nothing
            assert runtime.closing
            assert not app.running
            assert len(runtime.table) == 0
            await checkpoint()
    assert {event.session_id for event in ended} == sessions
    assert {event.reason for event in ended} == {"shutdown"}


async def test_a_run_ended_at_once_stops_at_once() -> None:
    # Keep-alive and the watch may not have begun when shutdown comes; they must end all the same,
    # not hold the run until `shutdown_timeout` cancels them.
    app = McpApp(MCPServer("runtime-test", version="1.0.0"), shutdown_timeout=60)
    with anyio.fail_after(GUARD):
        for _ in range(3):
            async with app.lifespan_context():
                pass
            assert app._runtime is None
