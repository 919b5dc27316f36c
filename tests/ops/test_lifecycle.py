"""Lifecycle events: payloads, balance, idle reaping, tool calls, listener isolation, and no token
leaks in logs, stats, events or error bodies."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest

from asgi_mcp import McpApp, SessionCreated, Tenants, ToolCalled
from tests.kit.mcp_servers import ALL_TOKENS, TOKEN_A, TOKEN_B, TOKEN_C, UNKNOWN_TOKEN, Probe, factory_of, tenant_server
from tests.kit.memory import Response, TokenClient, final_message, serving
from tests.kit.messages import LEGACY, call_tool, initialize, request
from tests.kit.polling import Recorder, wait_until

pytestmark = pytest.mark.anyio

GUARD = 10.0


def tenants_app(**options: Any) -> tuple[McpApp, Tenants]:
    tenants = Tenants()
    tenants.add(TOKEN_A, factory_of("alpha"), label="alpha")
    tenants.add(TOKEN_B, factory_of("bravo"), label="bravo")
    return McpApp(tenants=tenants, **options), tenants


def assert_balanced(recorder: Recorder) -> None:
    """Every session_created has exactly one session_ended, and no session ends unannounced."""
    created = Counter(e.session_id for e in recorder.of("session_created"))
    ended = Counter(e.session_id for e in recorder.of("session_ended"))
    assert all(count == 1 for count in created.values()), created
    assert ended == created, (created, ended)


# -- sessions -------------------------------------------------------------------------------------


async def test_session_created_and_ended_payloads() -> None:
    app, _ = tenants_app()
    recorder = Recorder(app)
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            a = TokenClient(client, TOKEN_A)
            session_id = await a.open_session()
            [created] = await recorder.wait_for("session_created")
            assert isinstance(created, SessionCreated)
            assert (created.session_id, created.tenant_id, created.server_name) == (session_id, "alpha", "alpha")
            assert created.protocol_version == LEGACY
            assert created.created_at > 0
            assert (await a.delete(session_id)).status == 200
            [ended] = await recorder.wait_for("session_ended")
            assert (ended.session_id, ended.tenant_id, ended.server_name, ended.reason) == (
                session_id,
                "alpha",
                "alpha",
                "deleted",
            )
            assert ended.duration >= 0
            assert ended.ended_at >= created.created_at
    assert_balanced(recorder)


async def test_idle_sessions_are_reaped_with_reason_idle_timeout() -> None:
    app, _ = tenants_app(session_idle_timeout=0.05)
    recorder = Recorder(app)
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            a = TokenClient(client, TOKEN_A)
            idle = await a.open_session()
            gate = Probe()
            app.config.tenants.update(TOKEN_B, lambda: tenant_server("bravo", gate=gate))  # type: ignore[union-attr]
            b = TokenClient(client, TOKEN_B)
            busy = await b.open_session()
            in_flight = await b.post(call_tool(1, "block"), session_id=busy)
            await gate.started.wait()
            [ended] = await recorder.wait_for("session_ended")
            assert (ended.session_id, ended.tenant_id, ended.reason) == (idle, "alpha", "idle_timeout")
            assert (await a.post(request(2, "ping"), session_id=idle)).status == 404
            # A session with a call in flight is not idle, however long the call takes.
            assert [e.session_id for e in recorder.of("session_ended")] == [idle]
            gate.release.set()
            await in_flight.read()
            [_, later] = await recorder.wait_for("session_ended", 2)
            assert (later.session_id, later.reason) == (busy, "idle_timeout")
    assert_balanced(recorder)


async def test_events_balance_across_every_way_a_session_ends() -> None:
    app, tenants = tenants_app()
    tenants.add(TOKEN_C, factory_of("charlie"), label="charlie")
    recorder = Recorder(app)
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            a, b, c = (TokenClient(client, t) for t in (TOKEN_A, TOKEN_B, TOKEN_C))
            deleted = await a.open_session()
            kept = [await a.open_session(), await c.open_session()]
            removed = [await b.open_session(), await b.open_session()]
            stream = await b.get(removed[0])
            # A refused initialize opens nothing, so it announces and ends nothing.
            bad = await a.post(request(0, "initialize", {"protocolVersion": LEGACY}))
            assert bad.status in (200, 400)
            assert "error" in await final_message(bad)
            assert (await a.delete(deleted)).status == 200
            tenants.remove(TOKEN_B, policy="close")
            await stream.read()
            tenants.update(TOKEN_C, factory_of("charlie2"), policy="close")
            await recorder.wait_for("session_ended", 4)
            assert {e.reason for e in recorder.of("session_ended")} == {"deleted", "token_removed", "token_updated"}
            assert_balanced_so_far = Counter(e.session_id for e in recorder.of("session_ended"))
            assert set(assert_balanced_so_far) == {deleted, *removed, kept[1]}
    # Shutdown ends the rest.
    assert_balanced(recorder)
    assert [e.reason for e in recorder.of("session_ended") if e.session_id == kept[0]] == ["shutdown"]


# -- tool calls -----------------------------------------------------------------------------------


async def test_tool_called_payloads() -> None:
    app, _ = tenants_app()
    calls: list[ToolCalled] = []
    app.on("tool_called", calls.append)
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            a = TokenClient(client, TOKEN_A)
            session_id = await a.open_session()
            ok = await a.call(session_id, call_tool(1, "whoami"))
            assert ok["result"]["isError"] is False
            failed = await a.call(session_id, call_tool(2, "fail"))
            assert failed["result"]["isError"] is True
            invalid = await a.call(session_id, request(3, "tools/call", {"arguments": {}}))  # no tool name
            assert "error" in invalid
            await wait_until(lambda: len(calls) == 3)
            # Modern era: no session.
            modern = await TokenClient(client, TOKEN_B).modern(4, "tools/call", {"name": "fail", "arguments": {}})
            assert (await final_message(modern))["result"]["isError"] is True
            await wait_until(lambda: len(calls) == 4)
    first, second, third, fourth = calls
    assert (first.tool_name, first.tenant_id, first.session_id, first.success, first.error) == (
        "whoami",
        "alpha",
        session_id,
        True,
        None,
    )
    assert (second.tool_name, second.success, second.error) == ("fail", False, "tool_error")
    assert third.success is False
    assert third.error
    assert third.session_id == session_id
    assert (fourth.tool_name, fourth.tenant_id, fourth.session_id, fourth.success) == ("fail", "bravo", None, False)
    assert all(call.duration >= 0 for call in calls)


async def test_modern_tool_called_names_each_callers_tenant() -> None:
    # The modern era's observer is made once per tenant and kept: each call still names its own.
    app, _ = tenants_app()
    calls: list[ToolCalled] = []
    app.on("tool_called", calls.append)
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            for index, token in enumerate((TOKEN_A, TOKEN_B, TOKEN_A, TOKEN_B)):
                modern = await TokenClient(client, token).modern(
                    index, "tools/call", {"name": "whoami", "arguments": {}}
                )
                assert (await final_message(modern))["result"]["isError"] is False
            await wait_until(lambda: len(calls) == 4)
    assert [(call.tenant_id, call.session_id, call.success) for call in calls] == [
        ("alpha", None, True),
        ("bravo", None, True),
        ("alpha", None, True),
        ("bravo", None, True),
    ]


async def test_tool_called_duration_covers_the_call() -> None:
    gate = Probe()
    app = McpApp(tenants=Tenants({TOKEN_A: lambda: tenant_server("alpha", gate=gate)}))
    calls: list[ToolCalled] = []
    app.on("tool_called", calls.append)
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            a = TokenClient(client, TOKEN_A)
            session_id = await a.open_session()
            response = await a.post(call_tool(1, "block"), session_id=session_id)
            await gate.started.wait()
            started = anyio.current_time()
            await wait_until(lambda: anyio.current_time() - started >= 0.05)
            await anyio.wait_all_tasks_blocked()
            assert calls == []  # not before the call finished
            gate.release.set()
            await response.read()
            await wait_until(lambda: len(calls) == 1)
    assert calls[0].success
    assert calls[0].duration >= 0.05


# -- registry and server events -------------------------------------------------------------------


async def test_token_and_server_events() -> None:
    tenants = Tenants()
    app = McpApp(tenants=tenants)
    recorder = Recorder(app)
    tenants.add(TOKEN_A, factory_of("alpha"), label="alpha")
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            b_id = tenants.add(TOKEN_B, factory_of("bravo"))
            a = TokenClient(client, TOKEN_A)
            await a.open_session()
            await a.open_session()
            [registered] = await recorder.wait_for("server_registered")
            assert (registered.tenant_id, registered.server_name, registered.server_version) == (
                "alpha",
                "alpha",
                "1.0.0",
            )
            tenants.update(TOKEN_A, factory_of("alpha2"), policy="drain")
            [token_updated] = await recorder.wait_for("token_updated")
            assert (token_updated.tenant_id, token_updated.policy) == ("alpha", "drain")
            await a.open_session()
            [updated] = await recorder.wait_for("server_updated")
            assert (updated.old_server_name, updated.new_server_name) == ("alpha", "alpha2")
            assert tenants.remove(TOKEN_B)
            [token_removed] = await recorder.wait_for("token_removed")
            assert (token_removed.tenant_id, token_removed.policy) == (b_id, "close")
            assert recorder.of("server_removed") == []  # B never built a server
            tenants.remove(TOKEN_A, policy="close")
            [server_removed] = await recorder.wait_for("server_removed")
            assert server_removed.tenant_id == "alpha"
            assert server_removed.server_name == "alpha2"
            assert server_removed.had_active_sessions
            assert server_removed.active_sessions == 3
    assert [e.tenant_id for e in recorder.of("token_added")] == ["alpha", b_id]
    assert len(recorder.of("server_registered")) == 2
    assert_balanced(recorder)


# -- listeners never hold up requests -------------------------------------------------------------


async def test_slow_and_failing_listeners_never_block_or_fail_requests(caplog: pytest.LogCaptureFixture) -> None:
    app, _ = tenants_app()
    release = anyio.Event()
    slow_got: list[str] = []
    sync_failures: list[str] = []
    async_failures: list[str] = []

    async def slow(event: Any) -> None:
        await release.wait()
        slow_got.append(event.name)

    def raises(event: Any) -> None:
        sync_failures.append(event.name)
        raise RuntimeError("listener bug")

    async def raises_async(event: Any) -> None:
        async_failures.append(event.name)
        raise RuntimeError("async listener bug")

    for name in ("session_created", "tool_called", "session_ended"):
        app.on(name, slow)
        app.on(name, raises)
        app.on(name, raises_async)
    recorder = Recorder(app, ["session_created", "tool_called", "session_ended"])
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            a = TokenClient(client, TOKEN_A)
            session_id = await a.open_session()
            assert (await a.call(session_id, call_tool(1, "whoami")))["result"]["content"][0]["text"] == "alpha"
            assert (await a.delete(session_id)).status == 200
            second = await a.open_session()
            assert "alpha_only" in await a.tool_names(second)
            # Every request completed while the slow listener is still blocked on its first event.
            await wait_until(lambda: len(recorder.events) == 4 and len(sync_failures) == 4 and len(async_failures) == 4)
            assert slow_got == []
            release.set()
            await wait_until(lambda: len(slow_got) == 4)
            # Each subscription keeps its own order; the three names are three subscriptions.
            assert sorted(slow_got) == ["session_created", "session_created", "session_ended", "tool_called"]
    failures = [r for r in caplog.records if r.name == "asgi_mcp.events" and r.levelno >= logging.ERROR]
    assert len(failures) >= 8


async def test_unsubscribe_stops_delivery() -> None:
    app, _ = tenants_app()
    got: list[Any] = []
    unsubscribe = app.on("session_created", got.append)
    recorder = Recorder(app, ["session_created"])
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            a = TokenClient(client, TOKEN_A)
            await a.open_session()
            await wait_until(lambda: len(got) == 1)
            unsubscribe()
            await a.open_session()
            await recorder.wait_for("session_created", 2)
            await anyio.wait_all_tasks_blocked()
            assert len(got) == 1


def test_unknown_event_name_is_refused() -> None:
    app, _ = tenants_app()
    with pytest.raises(ValueError, match="unknown event"):
        app.on("session_started", print)  # type: ignore[arg-type]


# -- secrets --------------------------------------------------------------------------------------


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def capture_all_logs() -> Iterator[Capture]:
    root = logging.getLogger()
    handler = Capture()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def record_texts(record: logging.LogRecord) -> list[str]:
    """Everything a log record carries: message, args, extra attributes, formatted traceback."""
    texts = [str(record.msg), record.getMessage(), repr(record.args)]
    texts += [repr(value) for value in vars(record).values()]
    texts.append(logging.Formatter().format(record))
    return texts


async def test_no_raw_token_anywhere() -> None:
    def broken() -> Any:
        raise RuntimeError("factory broke")

    gate = Probe()
    tenants = Tenants()
    tenants.add(TOKEN_A, lambda: tenant_server("alpha", gate=gate))
    tenants.add(TOKEN_B, factory_of("bravo"), label="bravo")
    responses: list[Response] = []
    stats: list[dict[str, Any]] = []
    with capture_all_logs() as capture:
        app = McpApp(tenants=tenants, authorization_servers=["https://auth.example.com"], session_idle_timeout=60)
        recorder = Recorder(app)
        with anyio.fail_after(GUARD):
            async with serving(app) as client:
                tenants.add(TOKEN_C, broken)
                a, b, c = (TokenClient(client, t) for t in (TOKEN_A, TOKEN_B, TOKEN_C))

                async def keep(response: Response) -> Response:
                    await response.read()
                    responses.append(response)
                    return response

                sa, sb = await a.open_session(), await b.open_session()
                await keep(await b.post(call_tool(1, "fail"), session_id=sb))
                await keep(await b.post(request(2, "tools/call", {"arguments": {}}), session_id=sb))
                await keep(await b.post(call_tool(3, "whoami"), session_id=sb))
                await keep(await c.post(initialize()))  # failing factory: 500
                await keep(await TokenClient(client, UNKNOWN_TOKEN).post(initialize()))  # 401
                await keep(await TokenClient(client, None).post(initialize()))  # 401
                await keep(await b.post(request(4, "ping"), session_id=sa))  # cross-token 404
                await keep(await TokenClient(client, UNKNOWN_TOKEN).modern(5, "tools/list"))
                await keep(await a.modern(6, "tools/call", {"name": "fail", "arguments": {}}))
                in_flight = await a.post(call_tool(7, "block"), session_id=sa)
                await gate.started.wait()
                stats.append(app.stats())
                tenants.update(TOKEN_A, factory_of("alpha2"), policy="close")
                await keep(in_flight)
                await keep(await a.post(request(8, "ping"), session_id=sa))  # 404 after update-close
                await a.open_session()
                tenants.remove(TOKEN_A, policy="drain", drain_timeout=1)
                await keep(await a.post(initialize()))  # removed: 401
                tenants.remove(TOKEN_B, policy="close")
                stats.append(app.stats())
                await wait_until(lambda: len(recorder.of("server_removed")) == 2)
        stats.append(app.stats())
    assert [r.status for r in responses[3:7]] == [500, 401, 401, 404]
    texts: list[str] = []
    for record in capture.records:
        texts += record_texts(record)
    assert any("factory failed" in text for text in texts)  # the scenario did log things
    texts += [repr(event) for event in recorder.events]
    texts += [repr(s) for s in stats] + [repr(tenants)]
    for response in responses:
        texts.append(response.body.decode("latin-1"))
        texts += [f"{k!r}: {v!r}" for k, v in response.raw_headers]
    for token in ALL_TOKENS:
        leaks = [text for text in texts if token in text]
        assert leaks == [], f"{token} leaked: {leaks[:3]}"
    assert len(recorder.events) >= 15
