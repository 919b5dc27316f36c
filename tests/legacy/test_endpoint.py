"""The legacy (session) era through the real ASGI interface, in memory, on asyncio and Trio."""

from __future__ import annotations

import json
import re
from typing import Any

import anyio
import pytest

from asgi_mcp import InMemoryEventStore, McpApp
from tests.kit.mcp_servers import (
    SECRET,
    Probe,
    auth_middleware,
    build_failing_server,
    build_server,
    tenant_middleware,
    text_of,
)
from tests.kit.memory import AsgiClient, final_message, open_session, serving, session_call
from tests.kit.messages import LEGACY, call_tool, initialize, notification, request
from tests.kit.polling import let_time_pass, wait_until

pytestmark = pytest.mark.anyio

SSE_ACCEPT = "application/json, text/event-stream"


def app_for(probe: Probe | None = None, **options: Any) -> McpApp:
    return McpApp(build_server(probe), **options)


def error_of(body: Any) -> tuple[Any, int]:
    return body["id"], body["error"]["code"]


# -- initialize and the basic exchange ------------------------------------------------------------


async def test_initialize_mints_an_unguessable_visible_ascii_session_id() -> None:
    async with serving(app_for()) as client:
        ids = set()
        for _ in range(5):
            response = await client.post(initialize())
            assert response.status == 200
            assert response.content_type == "text/event-stream"
            assert response.header("x-accel-buffering") == "no"
            answer = await final_message(response)
            assert answer["id"] == 0
            assert answer["result"]["serverInfo"]["name"] == "asgi-mcp-tests"
            session_id = response.session_id
            assert session_id is not None
            assert all(0x21 <= ord(ch) <= 0x7E for ch in session_id)
            # base64url alphabet at 6 bits a character: at least 128 random bits.
            assert re.fullmatch(r"[A-Za-z0-9_-]+", session_id)
            assert len(session_id) * 6 >= 128
            ids.add(session_id)
        assert len(ids) == 5


async def test_full_exchange_over_sse() -> None:
    async with serving(app_for()) as client:
        session_id = await open_session(client)
        tools = await session_call(client, session_id, request(1, "tools/list"))
        assert {"echo", "progress", "block", "ask"} <= {tool["name"] for tool in tools["result"]["tools"]}
        echoed = await session_call(client, session_id, call_tool(2, "echo", {"text": "héllo"}))
        assert echoed["id"] == 2
        assert text_of(echoed["result"]) == "héllo"
        pong = await session_call(client, session_id, request("p", "ping"))
        assert pong == {"jsonrpc": "2.0", "id": "p", "result": {}}


async def test_progress_and_logs_travel_on_the_request_stream_before_the_result() -> None:
    async with serving(app_for()) as client:
        session_id = await open_session(client)
        response = await client.post(
            call_tool(3, "progress", {"steps": 3}, progress_token="tok"), session_id=session_id
        )
        messages = await response.messages()
        methods = [m.get("method") for m in messages[:-1]]
        assert methods == ["notifications/progress", "notifications/message"] * 3
        assert [m["params"]["progress"] for m in messages if m.get("method") == "notifications/progress"] == [1, 2, 3]
        assert all(
            m["params"]["progressToken"] == "tok" for m in messages if m.get("method") == "notifications/progress"
        )
        assert messages[-1]["id"] == 3
        assert text_of(messages[-1]["result"]) == "done 3"


async def test_json_response_mode() -> None:
    async with serving(app_for(json_response=True)) as client:
        response = await client.post(initialize(), accept="application/json")
        assert response.status == 200
        assert response.content_type == "application/json"
        session_id = response.session_id
        assert session_id is not None
        assert (await response.json())["result"]["protocolVersion"] == LEGACY
        # Notifications and progress have nowhere to go: only the answer comes back.
        response = await client.post(
            call_tool(1, "progress", {"steps": 2}, progress_token=1), session_id=session_id, accept="application/json"
        )
        assert response.content_type == "application/json"
        body = await response.json()
        assert body["id"] == 1
        assert text_of(body["result"]) == "done 2"


async def test_notifications_and_responses_get_202_without_body() -> None:
    async with serving(app_for()) as client:
        session_id = await open_session(client)
        for message in (
            notification("notifications/roots/list_changed"),
            {"jsonrpc": "2.0", "id": 999, "result": {}},  # an answer nobody waits for
            {"jsonrpc": "2.0", "id": 998, "error": {"code": -1, "message": "no"}},
        ):
            response = await client.post(message, session_id=session_id)
            assert response.status == 202
            assert await response.read() == b""


# -- refusals ------------------------------------------------------------------------------------


async def test_missing_unknown_and_deleted_sessions() -> None:
    async with serving(app_for()) as client:
        response = await client.post(request(1, "ping"))
        assert response.status == 400
        assert response.session_id is None  # no stray id on a refusal
        response = await client.post(request(2, "ping"), session_id="no-such-session")
        assert response.status == 404
        assert error_of(await response.json()) == (2, -32600)
        assert (await client.get("no-such-session")).status == 404
        assert (await client.delete("no-such-session")).status == 404
        assert (await client.get(None)).status == 400

        session_id = await open_session(client)
        deleted = await client.delete(session_id)
        assert deleted.status == 200
        response = await client.post(request(3, "ping"), session_id=session_id)
        assert response.status == 404
        assert (await client.delete(session_id)).status == 404


async def test_malformed_session_id_is_400() -> None:
    async with serving(app_for()) as client:
        assert (await client.post(request(1, "ping"), session_id="has space")).status == 400


async def test_one_standalone_get_stream_per_session() -> None:
    async with serving(app_for()) as client:
        session_id = await open_session(client)
        first = await client.get(session_id)
        assert first.status == 200
        assert first.content_type == "text/event-stream"
        assert first.session_id == session_id
        second = await client.get(session_id)
        assert second.status == 409
        first.disconnect()
        await wait_until(first.app_done.is_set)
        third = await client.get(session_id)  # the slot is free again
        assert third.status == 200
        third.disconnect()


@pytest.mark.parametrize("accept", ["application/json", "text/html", None])
async def test_get_without_event_stream_accept_is_406(accept: str | None) -> None:
    async with serving(app_for()) as client:
        session_id = await open_session(client)
        headers = {"mcp-session-id": session_id}
        if accept is not None:
            headers["accept"] = accept
        assert (await client.request("GET", headers=headers)).status == 406


@pytest.mark.parametrize("accept", ["application/json", "text/event-stream", ""])
async def test_post_needs_both_json_and_event_stream(accept: str) -> None:
    async with serving(app_for()) as client:
        assert (await client.post(initialize(), accept=accept)).status == 406


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_post_wrong_content_type_is_415(content_type: str | None) -> None:
    async with serving(app_for()) as client:
        headers = {"accept": SSE_ACCEPT}
        if content_type is not None:
            headers["content-type"] = content_type
        response = await client.request("POST", headers=headers, body=json.dumps(initialize()).encode())
        assert response.status == 415


async def test_content_type_parameters_are_fine() -> None:
    async with serving(app_for()) as client:
        response = await client.post(initialize(), headers={"content-type": "Application/JSON; charset=utf-8"})
        assert response.status == 200


async def test_body_over_limit_is_413_with_content_length() -> None:
    async with serving(app_for(max_body_size=1024)) as client:
        body = json.dumps(call_tool(1, "echo", {"text": "x" * 2000})).encode()
        headers = {"content-type": "application/json", "accept": SSE_ACCEPT, "content-length": str(len(body))}
        response = await client.request("POST", headers=headers, body=body)
        assert response.status == 413


async def test_body_over_limit_is_413_when_chunked() -> None:
    async with serving(app_for(max_body_size=1024)) as client:
        chunks = [b"{" + b" " * 500] * 3 + [b"}"]  # 1504 bytes in 4 chunks, no content-length
        headers = {"content-type": "application/json", "accept": SSE_ACCEPT}
        response = await client.request("POST", headers=headers, body=chunks)
        assert response.status == 413


async def test_body_at_limit_in_chunks_is_accepted() -> None:
    message = json.dumps(initialize()).encode()
    async with serving(app_for(max_body_size=len(message))) as client:
        chunks = [message[i : i + 7] for i in range(0, len(message), 7)]
        headers = {"content-type": "application/json", "accept": SSE_ACCEPT}
        response = await client.request("POST", headers=headers, body=chunks)
        assert response.status == 200
        assert response.session_id is not None


async def test_invalid_json_is_parse_error() -> None:
    async with serving(app_for()) as client:
        response = await client.post(b'{"jsonrpc": "2.0", "id": 1, "method": ')
        assert response.status == 400
        assert error_of(await response.json()) == (None, -32700)


async def test_batch_is_400() -> None:
    async with serving(app_for()) as client:
        session_id = await open_session(client)
        response = await client.post(
            [request(1, "ping"), request(2, "ping")], session_id=session_id, version="2025-03-26"
        )
        assert response.status == 400
        assert (await response.json())["error"]["code"] == -32600


async def test_unsupported_version_header_is_400_minus_32022() -> None:
    async with serving(app_for()) as client:
        session_id = await open_session(client)
        response = await client.post(request(5, "ping"), session_id=session_id, version="1999-01-01")
        assert response.status == 400
        body = await response.json()
        assert body["error"]["code"] == -32022
        assert body["error"]["data"]["requested"] == "1999-01-01"


async def test_other_supported_version_header_on_a_session_is_accepted() -> None:
    """Conformance clients send 2025-03-26 on 2025-11-25 sessions; the negotiated version rules."""
    async with serving(app_for()) as client:
        session_id = await open_session(client, version=LEGACY)
        for header in ("2025-03-26", "2025-06-18", "2024-11-05", None):
            answer = await session_call(client, session_id, request(1, "ping"), version=header)  # type: ignore[arg-type]
            assert answer["result"] == {}


async def test_initialize_as_notification_is_400() -> None:
    async with serving(app_for()) as client:
        response = await client.post(notification("initialize", {"protocolVersion": LEGACY}))
        assert response.status == 400


async def test_unknown_path_is_404_and_other_methods_405() -> None:
    async with serving(app_for()) as client:
        assert (await client.request("GET", path="/elsewhere", headers={"accept": "text/event-stream"})).status == 404
        assert (await client.request("POST", path="/mcp/extra")).status == 404
        response = await client.request("PUT", headers={"content-type": "application/json"}, body=b"{}")
        assert response.status == 405
        allowed = {part.strip() for part in (response.header("allow") or "").split(",")}
        assert allowed == {"GET", "POST", "DELETE"}
        assert (await client.request("PATCH")).status == 405


async def test_trailing_slash_is_served_without_redirect() -> None:
    async with serving(app_for()) as client:
        headers = {"content-type": "application/json", "accept": SSE_ACCEPT}
        response = await client.request("POST", path="/mcp/", headers=headers, body=json.dumps(initialize()).encode())
        assert response.status == 200


async def test_dns_rebinding_on_a_loopback_bind() -> None:
    async with serving(app_for(), server=("127.0.0.1", 8000)) as client:
        body = json.dumps(initialize()).encode()
        base = {"content-type": "application/json", "accept": SSE_ACCEPT}
        evil_host = await client.request("POST", headers={**base, "host": "evil.example.com"}, body=body)
        assert evil_host.status == 421
        evil_origin = await client.request(
            "POST", headers={**base, "host": "127.0.0.1:8000", "origin": "http://evil.example.com"}, body=body
        )
        assert evil_origin.status == 403
        fine = await client.request(
            "POST", headers={**base, "host": "localhost:8000", "origin": "http://localhost:8000"}, body=body
        )
        assert fine.status == 200


async def test_allowed_hosts_and_origins_configure_the_check() -> None:
    app = app_for(allowed_hosts=["mcp.example.com"], allowed_origins=["https://app.example.com"])
    async with serving(app, server=("0.0.0.0", 443)) as client:
        body = json.dumps(initialize()).encode()
        base = {"content-type": "application/json", "accept": SSE_ACCEPT}
        ok = await client.request(
            "POST", headers={**base, "host": "mcp.example.com", "origin": "https://app.example.com"}, body=body
        )
        assert ok.status == 200
        assert (await client.request("POST", headers={**base, "host": "other.example.com"}, body=body)).status == 421
        bad_origin = {**base, "host": "mcp.example.com", "origin": "https://mcp.example.com"}
        assert (await client.request("POST", headers=bad_origin, body=body)).status == 403


# -- sessions: limits, failures, expiry ------------------------------------------------------------


async def test_max_sessions_is_503_and_frees_on_delete() -> None:
    async with serving(app_for(max_sessions=2)) as client:
        first = await open_session(client)
        await open_session(client)
        refused = await client.post(initialize())
        assert refused.status == 503
        assert refused.session_id is None
        assert (await client.delete(first)).status == 200
        await open_session(client)


async def test_failed_initialize_leaves_no_session() -> None:
    async with serving(app_for(max_sessions=1)) as client:
        bad = request(0, "initialize", {"capabilities": {}})  # no protocolVersion, no clientInfo
        for _ in range(3):
            response = await client.post(bad)
            assert response.status == 400
            assert response.session_id is None
            assert (await response.json())["error"]["code"] == -32602
        # The single slot is still free.
        await open_session(client)


async def test_idle_session_expires() -> None:
    app = app_for(session_idle_timeout=0.05)
    async with serving(app) as client:
        session_id = await open_session(client)
        assert app._runtime is not None
        table = app._runtime.table
        await wait_until(lambda: table.get(session_id) is None)
        response = await client.post(request(1, "ping"), session_id=session_id)
        assert response.status == 404


async def test_open_get_stream_keeps_a_session_alive() -> None:
    app = app_for(session_idle_timeout=0.05)
    async with serving(app) as client:
        session_id = await open_session(client)
        stream = await client.get(session_id)
        assert stream.status == 200
        await let_time_pass(0.3)  # six idle timeouts
        assert (await session_call(client, session_id, request(1, "ping")))["result"] == {}
        stream.disconnect()
        assert app._runtime is not None
        table = app._runtime.table
        await wait_until(lambda: table.get(session_id) is None)
        await wait_until(stream.app_done.is_set)


async def test_long_tool_call_keeps_a_session_alive() -> None:
    probe = Probe()
    app = app_for(probe, session_idle_timeout=0.05)
    async with serving(app) as client:
        session_id = await open_session(client)
        call = await client.post(call_tool(1, "block"), session_id=session_id)
        await probe.started.wait()
        await let_time_pass(0.3)
        probe.release.set()
        assert text_of((await call.messages())[-1]["result"]) == "released"


async def test_an_answer_ready_at_once_is_one_event_of_declared_length() -> None:
    """Its head waited for the answer, so the response says how long it is (one write on most servers)."""
    async with serving(app_for()) as client:
        session_id = await open_session(client)
        response = await client.post(call_tool(1, "echo", {"text": "x"}), session_id=session_id)
        body = await response.read()
        assert response.content_type == "text/event-stream"
        assert response.header("content-length") == str(len(body))
        assert [m["id"] for m in await response.messages()] == [1]


async def test_a_streamed_answer_declares_no_length() -> None:
    """The head went out with the first notification, before the answer's length was known."""
    async with serving(app_for()) as client:
        session_id = await open_session(client)
        call = call_tool(3, "progress", {"steps": 1}, progress_token="tok")
        response = await client.post(call, session_id=session_id)
        methods = [m.get("method") for m in await response.messages()]
        assert methods == ["notifications/progress", "notifications/message", None]
        assert response.header("content-length") is None


async def test_a_silent_tool_call_gets_its_head_long_before_a_keep_alive_comment() -> None:
    """The head waits for the answer only briefly (`HEAD_DELAY`), even with an idle ticker napping."""
    probe = Probe()
    async with serving(app_for(probe, keepalive_interval=3600)) as client:
        session_id = await open_session(client)
        try:
            call = await client.post(call_tool(1, "block"), session_id=session_id)  # returns with the head
            assert not probe.finished.is_set()
        finally:
            probe.release.set()  # (a head that never comes fails the test, and the tool still ends)
        assert call.content_type == "text/event-stream"
        assert [m.get("id") for m in await call.messages()] == [1]
        assert call.comments == []
        assert call.header("content-length") is None


async def test_a_silent_tool_call_gets_its_head_and_keep_alive_comments() -> None:
    """The handler runs in the POST's own task; the app's keep-alive ticker writes between its frames,
    and sends the head no frame carried (alone or with the first comment, whichever comes first)."""
    probe = Probe()
    async with serving(app_for(probe, keepalive_interval=0.05)) as client:
        session_id = await open_session(client)
        call = await client.post(call_tool(1, "block"), session_id=session_id, wait=False)
        await probe.started.wait()
        await call.started()
        assert call.content_type == "text/event-stream"
        assert call.header("content-length") is None
        assert not probe.finished.is_set()
        for _ in range(2):
            assert (await call.next_comment()).strip() == "ping"
        probe.release.set()
        messages = await call.messages()
        assert [m.get("id") for m in messages] == [1]
        assert text_of(messages[-1]["result"]) == "released"


# -- server-to-client requests ---------------------------------------------------------------------


async def test_elicitation_travels_on_the_post_stream_and_the_answer_reaches_the_tool() -> None:
    probe = Probe()
    async with serving(app_for(probe)) as client:
        session_id = await open_session(client, capabilities={"elicitation": {}})
        call = await client.post(call_tool(7, "ask"), session_id=session_id)
        asked = await call.next_message()
        assert asked["method"] == "elicitation/create"
        assert asked["params"]["message"] == "What is the answer?"
        answer = {"jsonrpc": "2.0", "id": asked["id"], "result": {"action": "accept", "content": {"answer": "42"}}}
        posted = await client.post(answer, session_id=session_id)
        assert posted.status == 202
        result = await call.next_message()
        assert result["id"] == 7
        assert text_of(result["result"]) == "accept:42"
        assert probe.results == ["accept:42"]


async def test_elicitation_error_answer_reaches_the_tool() -> None:
    async with serving(app_for()) as client:
        session_id = await open_session(client, capabilities={"elicitation": {}})
        call = await client.post(call_tool(7, "ask"), session_id=session_id)
        asked = await call.next_message()
        refusal = {"jsonrpc": "2.0", "id": asked["id"], "error": {"code": -32600, "message": "user said no"}}
        assert (await client.post(refusal, session_id=session_id)).status == 202
        result = await call.next_message()
        assert result["id"] == 7
        # MCPServer reports a failed tool as a tool error carrying the client's message.
        assert "user said no" in json.dumps(result)


# -- resumability ------------------------------------------------------------------------------------


async def test_priming_event_only_for_2025_11_25_sessions_with_a_store() -> None:
    async def first_event_has_id(app: McpApp, version: str, header: str) -> bool:
        async with serving(app) as client:
            session_id = await open_session(client, version=version)
            response = await client.post(request(1, "ping"), session_id=session_id, version=header)
            events = await response.events()
            if events[0].data == "":
                assert events[0].id is not None
                assert events[0].retry == 500
                return True
            return False

    store = InMemoryEventStore
    assert await first_event_has_id(app_for(event_store=store(), retry_interval=500), LEGACY, LEGACY)
    # The negotiated version decides, not the (possibly stale) header.
    assert await first_event_has_id(app_for(event_store=store(), retry_interval=500), LEGACY, "2025-03-26")
    assert not await first_event_has_id(app_for(event_store=store(), retry_interval=500), "2025-03-26", LEGACY)
    assert not await first_event_has_id(app_for(event_store=store(), retry_interval=500), "2025-06-18", LEGACY)
    assert not await first_event_has_id(app_for(), LEGACY, LEGACY)


async def test_close_sse_stream_then_resume_with_last_event_id() -> None:
    """SEP-1699 polling: the closed connection keeps the priming and queued events; a GET replays the rest."""
    probe = Probe()
    async with serving(app_for(probe, event_store=InMemoryEventStore(), retry_interval=100)) as client:
        session_id = await open_session(client)
        call = await client.post(call_tool(4, "poll"), session_id=session_id)
        events = await call.events()  # the server ended the connection, not the stream
        assert [e.data == "" for e in events] == [True, False]
        assert events[0].retry == 100
        assert json.loads(events[1].data)["params"]["data"] == "before close"
        assert probe.closed_stream.is_set()
        probe.release.set()
        await wait_until(lambda: probe.closed_stream.is_set() and not _handler_running(client, session_id))
        resumed = await client.get(session_id, last_event_id=events[1].id)
        assert resumed.status == 200
        replayed = await resumed.messages()
        assert [m.get("method") for m in replayed] == ["notifications/message", None]
        assert replayed[0]["params"]["data"] == "after close"
        assert replayed[1]["id"] == 4
        assert text_of(replayed[1]["result"]) == "polled"


@pytest.mark.parametrize(("store", "version"), [(False, LEGACY), (True, "2025-06-18")])
async def test_close_sse_stream_keeps_the_connection_when_the_client_cannot_resume(store: bool, version: str) -> None:
    """Without an event store, or before 2025-11-25 (no priming event), closing the stream would take
    the answer with it: as in the SDK's transport, the handler gets no close callback."""
    probe = Probe()
    app = app_for(probe, event_store=InMemoryEventStore() if store else None)
    async with serving(app) as client:
        session_id = await open_session(client, version)
        call = await client.post(call_tool(4, "poll"), session_id=session_id, version=version)
        await probe.closed_stream.wait()
        probe.release.set()
        messages = await call.messages()
        assert [m.get("params", {}).get("data") for m in messages[:-1]] == ["before close", "after close"]
        assert text_of(messages[-1]["result"]) == "polled"


async def test_resume_while_the_handler_still_runs_continues_live() -> None:
    probe = Probe()
    async with serving(app_for(probe, event_store=InMemoryEventStore())) as client:
        session_id = await open_session(client)
        call = await client.post(call_tool(4, "poll"), session_id=session_id)
        events = await call.events()
        resumed = await client.get(session_id, last_event_id=events[0].id)  # from the priming event
        first = await resumed.next_event()
        assert json.loads(first.data)["params"]["data"] == "before close"  # replayed
        probe.release.set()
        live = await resumed.messages()
        # Nothing twice: the replayed event is skipped on the live connection.
        assert [m.get("params", {}).get("data") for m in live[:-1]] == ["after close"]
        assert live[-1]["id"] == 4
        assert text_of(live[-1]["result"]) == "polled"


async def test_last_event_id_of_another_session_never_replays() -> None:
    probe = Probe()
    async with serving(app_for(probe, event_store=InMemoryEventStore())) as client:
        alice = await open_session(client)
        mallory = await open_session(client)
        call = await client.post(call_tool(4, "poll"), session_id=alice)
        events = await call.events()
        probe.release.set()
        stolen = await client.get(mallory, last_event_id=events[0].id)
        assert stolen.status == 200  # just mallory's own standalone stream
        await wait_until(lambda: not _handler_running(client, alice))
        await anyio.wait_all_tasks_blocked()
        assert b"before close" not in stolen.body
        assert b"polled" not in stolen.body
        assert not stolen.complete
        stolen.disconnect()
        # The owner gets them.
        own = await client.get(alice, last_event_id=events[0].id)
        assert b"polled" in await own.read()


async def test_malformed_last_event_id_is_400() -> None:
    async with serving(app_for(event_store=InMemoryEventStore())) as client:
        session_id = await open_session(client)
        assert (await client.get(session_id, last_event_id="bad id with spaces")).status == 400


def _handler_running(client: AsgiClient, session_id: str) -> bool:
    runtime = client.app._runtime
    entry = runtime.table.get(session_id)
    return entry is not None and bool(entry.value.dispatcher._in_flight)


# -- cancellation and disconnects --------------------------------------------------------------------


async def test_cancelled_notification_ends_the_stream_with_request_cancelled() -> None:
    probe = Probe()
    async with serving(app_for(probe)) as client:
        session_id = await open_session(client)
        call = await client.post(call_tool(11, "block"), session_id=session_id)
        await probe.started.wait()
        cancel = notification("notifications/cancelled", {"requestId": 11, "reason": "changed my mind"})
        assert (await client.post(cancel, session_id=session_id)).status == 202
        final = (await call.messages())[-1]
        assert final["id"] == 11
        assert final["error"]["code"] == -32800
        assert probe.cancelled.is_set()


async def test_legacy_disconnect_does_not_cancel_the_handler() -> None:
    probe = Probe()
    async with serving(app_for(probe, event_store=InMemoryEventStore())) as client:
        session_id = await open_session(client)
        call = await client.post(call_tool(12, "block"), session_id=session_id)
        priming = await call.next_event()
        await probe.started.wait()
        call.disconnect()
        await anyio.wait_all_tasks_blocked()
        assert not probe.cancelled.is_set()
        probe.release.set()
        await probe.finished.wait()
        assert probe.results == ["released"]
        assert not probe.cancelled.is_set()
        resumed = await client.get(session_id, last_event_id=priming.id)
        final = (await resumed.messages())[-1]
        assert final["id"] == 12
        assert text_of(final["result"]) == "released"


async def test_delete_ends_in_flight_requests() -> None:
    probe = Probe()
    async with serving(app_for(probe, json_response=True)) as client:
        response = await client.post(initialize(), accept="application/json")
        session_id = response.session_id
        assert session_id is not None
        async with anyio.create_task_group() as tg:
            results: list[dict[str, Any]] = []

            async def blocked_call() -> None:
                reply = await client.post(call_tool(1, "block"), session_id=session_id, accept="application/json")
                results.append(await reply.json())

            tg.start_soon(blocked_call)
            await probe.started.wait()
            assert (await client.delete(session_id)).status == 200
        assert results[0]["error"]["code"] == -32000
        assert probe.cancelled.is_set()


# -- what handlers see -------------------------------------------------------------------------------


async def test_handlers_see_request_headers() -> None:
    async with serving(app_for()) as client:
        session_id = await open_session(client)
        response = await client.post(
            call_tool(1, "read_header", {"name": "X-Custom"}), session_id=session_id, headers={"x-custom": "v1"}
        )
        assert text_of((await final_message(response))["result"]) == "v1|v1"


async def test_middleware_contextvars_reach_handlers_per_request() -> None:
    app = app_for()
    wrapped = auth_middleware(tenant_middleware(app))
    async with app.lifespan_context(), anyio.create_task_group() as tg:
        client = AsgiClient(wrapped, tg)
        response = await client.post(initialize(), headers={"x-tenant": "acme", "authorization": "Bearer alice"})
        session_id = response.session_id
        assert session_id is not None
        await response.read()
        # Each request's own context reaches its handler (not the context of the initialize).
        for tenant, client_id in (("acme", "alice"), ("globex", "bob")):
            response = await client.post(
                call_tool(1, "whoami"),
                session_id=session_id,
                headers={"x-tenant": tenant, "authorization": f"Bearer {client_id}"},
            )
            assert text_of((await final_message(response))["result"]) == f"tenant={tenant} client={client_id}"
        response = await client.post(call_tool(2, "whoami"), session_id=session_id)
        assert text_of((await final_message(response))["result"]) == "tenant=None client=None"
        tg.cancel_scope.cancel()


async def test_unexpected_exception_is_an_error_without_internals() -> None:
    async with serving(McpApp(build_failing_server())) as client:
        session_id = await open_session(client)
        response = await client.post(call_tool(1, "explode"), session_id=session_id)
        answer = await final_message(response)
        assert answer["id"] == 1
        assert answer["error"]["code"] == -32603
        assert SECRET not in response.body.decode()
        assert "RuntimeError" not in response.body.decode()
        # The session survives its handler's crash.
        assert (await session_call(client, session_id, request(2, "ping")))["result"] == {}
