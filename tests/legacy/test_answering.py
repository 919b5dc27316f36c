"""A session's request answered on its POST (`_legacy.answering`), through the real ASGI interface: the
open SSE responses it counts in the app's stats, on asyncio and Trio."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from asgi_mcp import McpApp
from tests.kit.mcp_servers import Probe, build_server
from tests.kit.memory import AsgiClient, open_session, serving
from tests.kit.messages import call_tool
from tests.kit.polling import wait_until

pytestmark = pytest.mark.anyio


def app_for(probe: Probe, **options: Any) -> McpApp:
    return McpApp(build_server(probe), **options)


def open_streams(app: McpApp) -> int:
    return int(app.stats()["open_streams"])


@contextlib.asynccontextmanager
async def served(app: McpApp, probe: Probe) -> AsyncIterator[AsgiClient]:
    """The app served, its blocked handler released on the way out (a failed assertion included)."""
    async with serving(app) as client:
        try:
            yield client
        finally:
            probe.release.set()


async def test_a_streamed_answer_is_an_open_stream_while_its_handler_runs() -> None:
    probe = Probe()
    app = app_for(probe)
    async with served(app, probe) as client:
        session_id = await open_session(client)
        assert open_streams(app) == 0
        call = await client.post(call_tool(1, "block"), session_id=session_id, wait=False)
        await probe.started.wait()
        assert open_streams(app) == 1
        probe.release.set()
        await call.started()
        assert [m.get("id") for m in await call.messages()] == [1]
        await wait_until(call.app_done.is_set)
        assert open_streams(app) == 0


async def test_a_json_answer_is_no_stream() -> None:
    probe = Probe()
    app = app_for(probe, json_response=True)
    async with served(app, probe) as client:
        session_id = await open_session(client)
        call = await client.post(call_tool(1, "block"), session_id=session_id, wait=False)
        await probe.started.wait()
        assert open_streams(app) == 0
        probe.release.set()
        await call.started()
        assert (await call.json())["id"] == 1


async def test_a_get_stream_and_a_streamed_answer_are_counted_together_until_each_ends() -> None:
    probe = Probe()
    app = app_for(probe)
    async with served(app, probe) as client:
        session_id = await open_session(client)
        listening = await client.get(session_id)
        assert listening.status == 200
        await wait_until(lambda: open_streams(app) == 1)
        call = await client.post(call_tool(1, "block"), session_id=session_id, wait=False)
        await probe.started.wait()
        assert open_streams(app) == 2
        listening.disconnect()
        await wait_until(listening.app_done.is_set)
        assert open_streams(app) == 1
        probe.release.set()
        await call.started()
        await call.messages()
        await wait_until(call.app_done.is_set)
        assert open_streams(app) == 0
