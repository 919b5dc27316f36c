"""The legacy outbound streams (`_legacy/streams.py`) through the real ASGI interface: which connection a
stream feeds, and that letting go of one never takes another's."""

from __future__ import annotations

import json

import anyio
import pytest
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.shared.exceptions import MCPError

from asgi_mcp import InMemoryEventStore, McpApp
from tests.kit.mcp_servers import Probe, build_server, text_of
from tests.kit.memory import open_session, serving
from tests.kit.messages import call_tool

pytestmark = pytest.mark.anyio


async def test_a_newer_reconnection_keeps_the_stream_when_the_older_one_ends() -> None:
    """Two GETs resume the same request stream: the newer takes it over, and the older one's end
    (its response completing) must not detach the newer one, which gets the rest live."""
    probe = Probe()
    async with serving(McpApp(build_server(probe), event_store=InMemoryEventStore())) as client:
        session_id = await open_session(client)
        call = await client.post(call_tool(4, "poll"), session_id=session_id)
        priming = (await call.events())[0]  # the server closed the connection for polling
        older = await client.get(session_id, last_event_id=priming.id)
        assert json.loads((await older.next_event()).data)["params"]["data"] == "before close"
        newer = await client.get(session_id, last_event_id=priming.id)
        assert json.loads((await newer.next_event()).data)["params"]["data"] == "before close"
        await older.read()  # replaced: its response ends ...
        with anyio.fail_after(5):
            await older.app_done.wait()  # ... and its request has finished
        probe.release.set()
        live = await newer.messages()
        assert [m.get("params", {}).get("data") for m in live[:-1]] == ["after close"]
        assert live[-1]["id"] == 4
        assert text_of(live[-1]["result"]) == "polled"


async def test_the_standalone_stream_takes_one_get_at_a_time_and_frees_it() -> None:
    async with serving(McpApp(build_server())) as client:
        session_id = await open_session(client)
        first = await client.get(session_id)
        assert first.status == 200
        assert (await client.get(session_id)).status == 409
        first.disconnect()
        with anyio.fail_after(5):
            await first.app_done.wait()
        second = await client.get(session_id)
        assert second.status == 200
        assert (await client.delete(session_id)).status == 200
        await second.read()  # the session's end ends its stream


class _OpaqueStore(InMemoryEventStore):
    """A user's store: `EventLog` hands it the SDK's models, not the text that was sent."""


@pytest.mark.parametrize("store", [InMemoryEventStore, _OpaqueStore])
async def test_an_answer_that_cannot_be_written_is_stored_as_the_internal_error_sent(
    store: type[InMemoryEventStore],
) -> None:
    """The answer replaced by an internal error (its data holds an object JSON cannot hold) is
    stored as that error: a client resuming after the progress event gets what was sent."""
    mcp = MCPServer("failing", version="1.0.0")

    @mcp.tool()
    async def fail(ctx: Context) -> str:
        await ctx.report_progress(1, 2)
        raise MCPError(code=-32001, message="out of range", data={"a": object()})

    expected = {"jsonrpc": "2.0", "id": 4, "error": {"code": -32603, "message": "Internal error"}}
    with anyio.fail_after(10):
        async with serving(McpApp(mcp, event_store=store())) as client:
            session_id = await open_session(client)
            call = await client.post(call_tool(4, "fail", progress_token="p"), session_id=session_id)
            events = [event for event in await call.events() if event.data]
            assert [json.loads(event.data).get("method") for event in events] == ["notifications/progress", None]
            assert json.loads(events[1].data) == expected
            resumed = await client.get(session_id, last_event_id=events[0].id)
            assert await resumed.messages() == [expected]
