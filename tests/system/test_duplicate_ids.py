"""Duplicate request ids in flight on one session (issue 12, item 3).

Some clients send `"id": 1` on every request and pool one `Mcp-Session-Id`, so two calls with the same id
run at once. Each POST must get its own call's answer and its own progress; a server-to-client request
goes to the POST of the call that made it; `notifications/cancelled` for the id reaches the newest live
call, and the older one still completes, or can be cancelled once the newer one ended; the session's end
cancels them all. Over the real ASGI interface (both backends, SSE and JSON answers, slow and fast tools),
the modern era (where every POST is its own exchange), and one real server.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import anyio
import httpx
import pytest
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from pydantic import BaseModel

from asgi_mcp import McpApp
from tests.kit.mcp_servers import text_of
from tests.kit.memory import AsgiClient, Response, final_message, modern_post, open_session, serving
from tests.kit.messages import LEGACY, call_tool, notification, request
from tests.kit.real_servers import SERVERS
from tests.kit.sse import SSEDecoder

pytestmark = pytest.mark.anyio

GUARD: Final = 10.0
ID: Final = 1  # the id every call of these clients carries


class Holds:
    """Per-tag handshakes for the `hold` tool (made lazily, inside the running loop)."""

    def __init__(self) -> None:
        self._started: dict[str, anyio.Event] = {}
        self._release: dict[str, anyio.Event] = {}
        self.cancelled: list[str] = []

    def started(self, tag: str) -> anyio.Event:
        return self._started.setdefault(tag, anyio.Event())

    def release(self, tag: str) -> anyio.Event:
        return self._release.setdefault(tag, anyio.Event())

    def release_all(self) -> None:
        """A failing test leaves no call holding (one nothing can cancel would hang the shutdown)."""
        for event in self._release.values():
            event.set()


class Answer(BaseModel):
    answer: str


def build(holds: Holds) -> MCPServer:
    mcp = MCPServer("duplicate-ids", version="1.0.0")

    @mcp.tool()
    async def hold(tag: str, ctx: Context) -> str:
        """Says it started (as progress carrying its tag), then runs until released."""
        await ctx.report_progress(0, 1, tag)
        holds.started(tag).set()
        try:
            await holds.release(tag).wait()
        except anyio.get_cancelled_exc_class():
            holds.cancelled.append(tag)
            raise
        await ctx.report_progress(1, 1, tag)
        return f"released {tag}"

    @mcp.tool()
    def echo(text: str) -> str:
        """The fast tool."""
        return text

    @mcp.tool()
    async def ask(tag: str, ctx: Context) -> str:
        """Elicits an answer: a server-to-client request bound to this call."""
        result = await ctx.elicit(f"question {tag}", Answer)
        return f"{tag}:{result.data.answer if result.action == 'accept' else result.action}"

    return mcp


@asynccontextmanager
async def session(json_response: bool) -> AsyncIterator[tuple[AsgiClient, str, Holds]]:
    holds = Holds()
    async with serving(McpApp(build(holds), json_response=json_response)) as client:
        try:
            with anyio.fail_after(GUARD):
                yield client, await open_session(client), holds
        finally:
            holds.release_all()


async def start_hold(client: AsgiClient, session_id: str, holds: Holds, tag: str) -> Response:
    """A `hold` call with the shared id, running once this returns."""
    message = call_tool(ID, "hold", {"tag": tag}, progress_token="shared-token")
    response = await client.post(message, session_id=session_id, wait=False)
    await holds.started(tag).wait()
    return response


async def messages_of(response: Response) -> list[dict[str, Any]]:
    """Every JSON-RPC message of a response, its answer last (JSON or SSE)."""
    await response.started()
    if response.content_type == "application/json":
        return [await response.json()]
    return await response.messages()


async def cancel(client: AsgiClient, session_id: str) -> None:
    cancelled = notification("notifications/cancelled", {"requestId": ID, "reason": "changed my mind"})
    assert (await client.post(cancelled, session_id=session_id)).status == 202


MODES = pytest.mark.parametrize("json_response", [False, True], ids=["sse", "json"])


@MODES
async def test_two_slow_calls_with_one_id_each_get_their_own_answer(json_response: bool) -> None:
    async with session(json_response) as (client, session_id, holds):
        first = await start_hold(client, session_id, holds, "a")
        second = await start_hold(client, session_id, holds, "b")
        holds.release("b").set()  # the newer answers first, then the older
        second_messages = await messages_of(second)
        holds.release("a").set()
        first_messages = await messages_of(first)
        for messages, tag in ((first_messages, "a"), (second_messages, "b")):
            answer = messages[-1]
            assert answer["id"] == ID
            assert text_of(answer["result"]) == f"released {tag}"
            # Its own progress only, on its own POST (none at all for JSON answers).
            progress = [m["params"] for m in messages[:-1] if m.get("method") == "notifications/progress"]
            assert [p["message"] for p in progress] == ([] if json_response else [tag, tag])
            assert all(p["progressToken"] == "shared-token" for p in progress)
        assert holds.cancelled == []


@MODES
async def test_fast_calls_with_one_id_each_get_their_own_answer(json_response: bool) -> None:
    async with session(json_response) as (client, session_id, _):
        answers: dict[int, dict[str, Any]] = {}

        async def call(n: int) -> None:
            response = await client.post(call_tool(ID, "echo", {"text": f"n{n}"}), session_id=session_id, wait=False)
            answers[n] = (await messages_of(response))[-1]

        async with anyio.create_task_group() as tg:
            for n in range(8):
                tg.start_soon(call, n)
        assert {n: (a["id"], text_of(a["result"])) for n, a in answers.items()} == {n: (ID, f"n{n}") for n in range(8)}


@MODES
async def test_cancelling_by_id_reaches_the_newest_and_the_older_still_completes(json_response: bool) -> None:
    async with session(json_response) as (client, session_id, holds):
        first = await start_hold(client, session_id, holds, "a")
        second = await start_hold(client, session_id, holds, "b")
        await cancel(client, session_id)
        answer = (await messages_of(second))[-1]
        assert answer["id"] == ID
        assert answer["error"]["code"] == -32800
        assert holds.cancelled == ["b"]
        holds.release("a").set()
        answer = (await messages_of(first))[-1]
        assert answer["id"] == ID
        assert text_of(answer["result"]) == "released a"


@MODES
async def test_the_older_call_can_be_cancelled_once_the_newest_ended(json_response: bool) -> None:
    async with session(json_response) as (client, session_id, holds):
        first = await start_hold(client, session_id, holds, "a")
        second = await start_hold(client, session_id, holds, "b")
        holds.release("b").set()
        assert text_of((await messages_of(second))[-1]["result"]) == "released b"
        await cancel(client, session_id)  # the newest live call with this id is now the older one
        answer = (await messages_of(first))[-1]
        assert answer["id"] == ID
        assert answer["error"]["code"] == -32800
        assert holds.cancelled == ["a"]


@MODES
async def test_the_session_end_cancels_every_call_with_the_id(json_response: bool) -> None:
    """The older call, hidden by the newer one with the same id, is in flight all the same."""
    async with session(json_response) as (client, session_id, holds):
        first = await start_hold(client, session_id, holds, "a")
        second = await start_hold(client, session_id, holds, "b")
        assert (await client.delete(session_id)).status == 200
        for response in (first, second):
            last = (await messages_of(response))[-1]
            if json_response:
                assert last["id"] == ID
                assert last["error"]["code"] == -32000
            else:
                assert "id" not in last  # the stream ended with its session: no answer to deliver
        assert sorted(holds.cancelled) == ["a", "b"]


@MODES
async def test_sequential_reuse_of_an_id(json_response: bool) -> None:
    async with session(json_response) as (client, session_id, holds):
        for n in range(3):
            first = await start_hold(client, session_id, holds, f"t{n}")
            holds.release(f"t{n}").set()
            assert text_of((await messages_of(first))[-1]["result"]) == f"released t{n}"
        # A cancellation for an id with nothing in flight reaches nothing and harms nothing.
        await cancel(client, session_id)
        response = await client.post(call_tool(ID, "echo", {"text": "after"}), session_id=session_id)
        assert text_of((await final_message(response))["result"]) == "after"


async def test_server_to_client_requests_go_to_their_own_call() -> None:
    """Each call's elicitation rides its own POST; the client's answers (to distinct server ids) reach
    the call that asked, and each POST gets that call's answer under the shared id."""
    async with session(json_response=False) as (client, session_id, _):
        first = await client.post(call_tool(ID, "ask", {"tag": "a"}), session_id=session_id)
        second = await client.post(call_tool(ID, "ask", {"tag": "b"}), session_id=session_id)
        asks = {}
        for response in (first, second):
            ask = await response.next_message()
            assert ask["method"] == "elicitation/create"
            asks[ask["params"]["message"]] = ask["id"]
        assert asks.keys() == {"question a", "question b"}
        assert asks["question a"] != asks["question b"]
        for tag in ("b", "a"):
            reply = {
                "jsonrpc": "2.0",
                "id": asks[f"question {tag}"],
                "result": {"action": "accept", "content": {"answer": tag * 2}},
            }
            assert (await client.post(reply, session_id=session_id)).status == 202
        for response, tag in ((first, "a"), (second, "b")):
            answer = (await response.messages())[-1]
            assert answer["id"] == ID
            assert text_of(answer["result"]) == f"{tag}:{tag * 2}"


# -- the modern era: every POST is its own exchange ----------------------------------------------------


@MODES
async def test_modern_calls_with_one_id_each_get_their_own_answer_and_progress(json_response: bool) -> None:
    holds = Holds()
    async with serving(McpApp(build(holds), json_response=json_response)) as client:
        with anyio.fail_after(GUARD):
            params = {"name": "hold", "arguments": {"tag": "a"}, "_meta": {"progressToken": "shared-token"}}
            first = await modern_post(client, ID, "tools/call", params, wait=False)
            await holds.started("a").wait()
            params = {**params, "arguments": {"tag": "b"}}
            second = await modern_post(client, ID, "tools/call", params, wait=False)
            await holds.started("b").wait()
            holds.release("b").set()
            second_messages = await messages_of(second)
            holds.release("a").set()
            first_messages = await messages_of(first)
            for messages, tag in ((first_messages, "a"), (second_messages, "b")):
                assert messages[-1]["id"] == ID
                assert text_of(messages[-1]["result"]) == f"released {tag}"
                progress = [m["params"]["message"] for m in messages if m.get("method") == "notifications/progress"]
                assert progress == ([] if json_response else [tag, tag])


# -- a real server ---------------------------------------------------------------------------------------


@pytest.mark.integration
@MODES
async def test_duplicate_ids_over_a_real_server(server_name: str, json_response: bool) -> None:
    """Also cancellation on each server: the client's and the session's end. The built-in server lends
    the scope of the app's call (`REQUEST_CANCEL_EXTENSION`); the others do not."""
    holds = Holds()
    app = McpApp(build(holds), json_response=json_response)
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    async with SERVERS[server_name][1](app) as base_url, httpx.AsyncClient(base_url=base_url, timeout=GUARD) as http:
        with anyio.fail_after(GUARD * 2):
            opened = await http.post("/mcp", headers=headers, json=_initialize())
            session_headers = {
                **headers,
                "mcp-session-id": opened.headers["mcp-session-id"],
                "mcp-protocol-version": LEGACY,
            }
            initialized = notification("notifications/initialized")
            assert (await http.post("/mcp", headers=session_headers, json=initialized)).status_code == 202
            answers: dict[str, dict[str, Any]] = {}

            async def call(tag: str, name: str = "hold", arguments: dict[str, Any] | None = None) -> None:
                message = call_tool(ID, name, arguments or {"tag": tag})
                response = await http.post("/mcp", headers=session_headers, json=message)
                if json_response:
                    answers[tag] = response.json()
                else:
                    data = [e.data for e in SSEDecoder().feed(response.content) if e.data]
                    answers[tag] = json.loads(data[-1]) if data else {}  # {}: ended with its session

            async with anyio.create_task_group() as tg:
                tg.start_soon(call, "a")
                await holds.started("a").wait()
                tg.start_soon(call, "b")
                await holds.started("b").wait()
                cancelled = notification("notifications/cancelled", {"requestId": ID})
                assert (await http.post("/mcp", headers=session_headers, json=cancelled)).status_code == 202
                holds.release("a").set()
            assert answers["b"]["error"]["code"] == -32800
            assert text_of(answers["a"]["result"]) == "released a"
            assert answers["a"]["id"] == answers["b"]["id"] == ID
            await call("echo", "echo", {"text": "still here"})  # the session goes on
            assert text_of(answers["echo"]["result"]) == "still here"

            async with anyio.create_task_group() as tg:
                for tag in ("c", "d"):
                    tg.start_soon(call, tag)
                    await holds.started(tag).wait()
                assert (await http.delete("/mcp", headers=session_headers)).status_code == 200
            ended = [answers[tag].get("error", {}).get("code") for tag in ("c", "d")]
            assert ended == ([-32000, -32000] if json_response else [None, None])
            assert sorted(holds.cancelled) == ["b", "c", "d"]


def _initialize() -> dict[str, Any]:
    return request(
        0, "initialize", {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}
    )
