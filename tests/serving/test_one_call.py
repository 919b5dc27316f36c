"""The one-call per-bearer server over real sockets (hypercorn), on asyncio and Trio."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, Final

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
import httpx
import pytest
from mcp.server import MCPServer

from asgi_mcp import ConfigurationError, Event, EventName, PerBearerServer, ServerInfo, create_per_bearer_server
from tests.kit.http import headers, open_session
from tests.kit.polling import wait_until

pytestmark = pytest.mark.integration

ALICE: Final = "sk-live-alice-7f3a9c0e55d1"
BOB: Final = "sk-live-bob-2b8e41d09c77"
STOP_BOUND: Final = 10.0  # seconds; far below the 60 s shutdown_timeout the bounded-stop test sets


def tools_server(name: str, *tools: str) -> Callable[[], MCPServer]:
    """A factory of an MCPServer called `name` whose tools each answer with their own name."""

    def factory() -> MCPServer:
        mcp = MCPServer(name, version="1.0.0")
        for tool in tools:
            mcp.add_tool(_answering(tool), name=tool, description=f"answers {tool}")
        return mcp

    return factory


def _answering(text: str) -> Callable[[], str]:
    def answer() -> str:
        return text

    return answer


def two_tenants(**options: Any) -> PerBearerServer:
    return (
        create_per_bearer_server(port=0, **options)
        .add_token(ALICE, tools_server("alice-tools", "hello"), label="alice")
        .add_token(BOB, tools_server("bob-tools", "add", "stats"))
    )


def all_signal_handlers() -> dict[int, Any]:
    # Every signal Python can query (valid_signals() also lists real-time ones getsignal accepts).
    return {sig: signal.getsignal(sig) for sig in signal.valid_signals()}


@pytest.mark.anyio
async def test_port_zero_gives_the_real_port_and_each_token_its_tools() -> None:
    server = two_tenants()
    before = time.time()
    async with server, httpx.AsyncClient() as client:
        info = server.server_info()
        assert isinstance(info, ServerInfo)
        assert info.port != 0
        assert info.url == f"http://127.0.0.1:{info.port}/mcp"
        assert (info.host, info.endpoint) == ("127.0.0.1", "/mcp")
        assert before <= info.started_at <= time.time()
        with pytest.raises(AttributeError):
            info.port = 1  # type: ignore[misc]
        assert server.is_running

        alice = await open_session(client, info.url, ALICE)
        bob = await open_session(client, info.url, BOB)
        assert (alice.server_name, bob.server_name) == ("alice-tools", "bob-tools")
        assert await alice.tool_names() == ["hello"]
        assert await bob.tool_names() == ["add", "stats"]
        assert await alice.call_tool("hello") == "hello"

        unknown = await client.post(info.url, json={}, headers=headers("sk-live-nobody"))
        assert unknown.status_code == 401
        assert 'error="invalid_token"' in unknown.headers["www-authenticate"]
    assert not server.is_running
    assert server.server_info() is None


@pytest.mark.anyio
async def test_start_and_stop_without_async_with() -> None:
    server = two_tenants()
    info = await server.start()
    try:
        async with httpx.AsyncClient() as client:
            assert (await open_session(client, info.url, ALICE)).server_name == "alice-tools"
    finally:
        await server.stop()
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as client:
            await client.post(info.url, json={}, headers=headers(ALICE))


@pytest.mark.anyio
async def test_token_methods_chain_and_unknown_tokens_raise_without_naming_them() -> None:
    server = create_per_bearer_server()
    assert server.add_token(ALICE, tools_server("a"), label="alice").add_token(BOB, tools_server("b")) is server
    assert server.has_token(ALICE)
    assert not server.has_token("sk-live-nobody")
    assert server.token_ids()[0] == "alice"
    assert server.token_ids()[1].startswith("tok-")
    assert server.update_token(BOB, tools_server("b2")).remove_token(BOB, policy="drain") is server
    assert server.token_ids() == ["alice"]
    for call in (
        lambda: server.remove_token("sk-live-nobody"),
        lambda: server.update_token("sk-live-nobody", tools_server("c")),
    ):
        with pytest.raises(KeyError) as caught:
            call()
        assert "sk-live-nobody" not in str(caught.value)
    with pytest.raises(ValueError, match="already registered"):
        server.add_token(ALICE, tools_server("again"))


@pytest.mark.anyio
async def test_started_and_stopped_events_carry_the_real_address() -> None:
    server = two_tenants()
    seen: list[Event] = []
    server.on("started", seen.append)
    server.on("stopped", seen.append)
    async with server:
        info = server.server_info()
        assert info is not None
        await wait_until(lambda: len(seen) == 1)
        [started] = seen
        assert started.name == "started"
        assert (started.url, started.host, started.port, started.endpoint) == (info.url, info.host, info.port, "/mcp")
        assert started.started_at == info.started_at
    # stop() returns after listeners were handed `stopped`.
    assert [event.name for event in seen] == ["started", "stopped"]
    stopped = seen[1]
    assert stopped.name == "stopped"
    assert stopped.stopped_at >= info.started_at
    assert stopped.uptime >= 0


@pytest.mark.anyio
async def test_restart_serves_and_delivers_events_again() -> None:
    server = two_tenants()
    seen: list[str] = []
    server.on("started", lambda event: seen.append(event.name))
    server.on("stopped", lambda event: seen.append(event.name))
    for _ in range(2):
        async with server, httpx.AsyncClient() as client:
            info = server.server_info()
            assert info is not None
            assert await (await open_session(client, info.url, BOB)).tool_names() == ["add", "stats"]
    assert seen == ["started", "stopped", "started", "stopped"]


@pytest.mark.anyio
async def test_stop_is_bounded_with_open_sse_streams() -> None:
    """A GET stream and a POST stream of a tool that never returns: stop() must not wait them out."""
    called = anyio.Event()

    def blocking() -> MCPServer:
        mcp = MCPServer("blocking")

        @mcp.tool()
        async def forever() -> str:
            called.set()
            await anyio.sleep_forever()
            return "never"

        return mcp

    server = create_per_bearer_server(shutdown_timeout=60.0).add_token(ALICE, blocking)
    ended: list[str] = []

    async def hold(client: httpx.AsyncClient, method: str, url: str, ready: anyio.Event, **kwargs: Any) -> None:
        try:
            async with client.stream(method, url, **kwargs) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                ready.set()
                async for _ in response.aiter_bytes():
                    pass
        except httpx.HTTPError:
            pass  # the server closing the stream mid-body is one way for it to end
        ended.append(method)

    async with httpx.AsyncClient(timeout=120) as client, anyio.create_task_group() as tg:
        with anyio.fail_after(STOP_BOUND):
            info = await server.start()
            session = await open_session(client, info.url, ALICE)
            get_open, post_open = anyio.Event(), anyio.Event()
            stream_headers = headers(ALICE, session.session_id)
            tg.start_soon(lambda: hold(client, "GET", info.url, get_open, headers=stream_headers))
            call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "forever", "arguments": {}}}
            tg.start_soon(lambda: hold(client, "POST", info.url, post_open, headers=stream_headers, json=call))
            await get_open.wait()
            await post_open.wait()
            await called.wait()
            assert server.stats()["open_streams"] == 2

            started = anyio.current_time()
            await server.stop()
            assert anyio.current_time() - started < STOP_BOUND / 2
            await wait_until(lambda: len(ended) == 2)
    assert sorted(ended) == ["GET", "POST"]


@pytest.mark.anyio
async def test_stop_is_idempotent() -> None:
    server = two_tenants()
    await server.stop()  # never started: nothing to do
    await server.start()
    await server.stop()
    await server.stop()
    assert not server.is_running


@pytest.mark.anyio
async def test_no_signal_handlers_are_installed() -> None:
    before = all_signal_handlers()
    server = two_tenants()
    async with server, httpx.AsyncClient() as client:
        info = server.server_info()
        assert info is not None
        await open_session(client, info.url, ALICE)
        assert all_signal_handlers() == before
    assert all_signal_handlers() == before


@pytest.mark.anyio
async def test_health_route_says_only_ok() -> None:
    server = two_tenants(health_path="/healthz")
    async with server, httpx.AsyncClient() as client:
        info = server.server_info()
        assert info is not None
        base = f"http://127.0.0.1:{info.port}"
        health = await client.get(base + "/healthz")
        assert health.status_code == 200
        assert health.text == "ok"
        assert health.headers["content-type"].startswith("text/plain")
        assert (await client.post(base + "/healthz")).status_code == 405
        # Nothing else answers without a token: no info or stats route.
        for path in ("/", "/stats", "/info"):
            answer = await client.get(base + path)
            assert answer.status_code == 404
            assert "alice" not in answer.text
            assert ALICE not in answer.text
    async with two_tenants() as without, httpx.AsyncClient() as client:
        info = without.server_info()
        assert info is not None
        assert (await client.get(f"http://127.0.0.1:{info.port}/healthz")).status_code == 404


@pytest.mark.anyio
async def test_stats_info_events_and_logs_never_carry_a_token(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server = two_tenants(logging=True)
    seen: list[Event] = []
    names: tuple[EventName, ...] = (
        "started",
        "stopped",
        "token_added",
        "token_removed",
        "token_updated",
        "server_registered",
        "server_removed",
        "server_updated",
        "session_created",
        "session_ended",
        "tool_called",
    )
    for name in names:
        server.on(name, seen.append)
    async with server, httpx.AsyncClient() as client:
        info = server.server_info()
        assert info is not None
        alice = await open_session(client, info.url, ALICE)
        await alice.call_tool("hello")
        await open_session(client, info.url, BOB)
        stats = server.stats()
        assert stats["registered_tokens"] == 2
        assert stats["active_sessions"] == 2
        assert stats["sessions_per_tenant"]["alice"] == 1
        server.update_token(BOB, tools_server("bob-v2", "add"), policy="close")
        texts = [json.dumps(stats), repr(info), repr(server), repr(server.token_ids())]
        await wait_until(lambda: any(event.name == "tool_called" for event in seen))
    texts += [repr(event) for event in seen]
    texts += [record.getMessage() for record in caplog.records if record.name.startswith(("asgi_mcp", "hypercorn"))]
    assert {event.name for event in seen} >= {"started", "stopped", "session_created", "session_ended", "tool_called"}
    assert any(record.name == "asgi_mcp.access" for record in caplog.records), "logging=True writes access lines"
    for text in texts:
        # Both tokens start with "sk-live": one check covers them and any part of them.
        assert "sk-live" not in text, text


@pytest.mark.anyio
async def test_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="sets path"):
        create_per_bearer_server(path="/x")
    with pytest.raises(ConfigurationError, match="health_path"):
        create_per_bearer_server(health_path="/mcp")
    other = "trio" if sys.modules.get("trio") is None or _on_asyncio() else "asyncio"
    server = create_per_bearer_server(backend=other)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="backend"):
        await server.start()
    assert not server.is_running
    async with two_tenants() as running:
        with pytest.raises(ConfigurationError, match="already running"):
            await running.start()
        info = running.server_info()
        assert info is not None
        taken = create_per_bearer_server(port=info.port)
        with pytest.raises(OSError, match="in use"):
            await taken.start()
        assert not taken.is_running


def _on_asyncio() -> bool:
    from asgi_mcp._serving.hypercorn import running_backend

    return running_backend() == "asyncio"


def test_missing_hypercorn_is_a_clear_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "hypercorn.config", None)
    with pytest.raises(ConfigurationError, match=r"asgi-mcp\[server\]"):
        create_per_bearer_server(server="hypercorn")


# -- stop() from anywhere in the event loop --------------------------------------------------------


def count_stopped(server: PerBearerServer) -> list[Event]:
    stopped: list[Event] = []
    server.on("stopped", stopped.append)
    return stopped


async def assert_port_closed(port: int) -> None:
    with pytest.raises(OSError, match="connection attempts failed"):
        await anyio.connect_tcp("127.0.0.1", port)


async def assert_serves(info: ServerInfo) -> None:
    async with httpx.AsyncClient() as client:
        assert (await open_session(client, info.url, ALICE)).server_name == "alice-tools"


@pytest.mark.anyio
async def test_stop_from_another_task() -> None:
    """A supervisor task stops a server another task started: no cancel scope crosses tasks."""
    server = two_tenants()
    stopped = count_stopped(server)
    with anyio.fail_after(STOP_BOUND):
        info = await server.start()
        await assert_serves(info)
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.stop)
        assert not server.is_running
        assert server.server_info() is None
        assert len(stopped) == 1
        await assert_port_closed(info.port)
        # The task that started it can carry on, nest scopes, and start it again.
        with anyio.move_on_after(STOP_BOUND):
            info = await server.start()
        await assert_serves(info)
        await server.stop()
    assert len(stopped) == 2


@pytest.mark.anyio
async def test_stop_from_a_signal_receiver_task() -> None:
    """The usual program shape: the main task starts the server, a signal-receiving task stops it."""
    server = two_tenants()
    stopped = count_stopped(server)

    async def stop_on_signal(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        with anyio.open_signal_receiver(signal.SIGUSR1) as signals:
            task_status.started()
            async for _ in signals:
                await server.stop()
                return

    with anyio.fail_after(STOP_BOUND):
        async with anyio.create_task_group() as tg:
            info = await server.start()
            await tg.start(stop_on_signal)
            os.kill(os.getpid(), signal.SIGUSR1)
        assert len(stopped) == 1
        assert not server.is_running
        await assert_port_closed(info.port)


@pytest.mark.anyio
async def test_stop_twice_and_concurrently_emits_stopped_once() -> None:
    server = two_tenants()
    stopped = count_stopped(server)
    with anyio.fail_after(STOP_BOUND):
        await server.stop()  # before start: nothing to do, no event
        assert stopped == []
        info = await server.start()
        returned: list[int] = []

        async def stop(index: int) -> None:
            await server.stop()
            # Every caller returns only once the server has stopped.
            assert not server.is_running
            assert len(stopped) == 1
            returned.append(index)

        async with anyio.create_task_group() as tg:
            for index in range(3):
                tg.start_soon(stop, index)
        await server.stop()
        await server.stop()
    assert sorted(returned) == [0, 1, 2]
    assert len(stopped) == 1
    await assert_port_closed(info.port)


@pytest.mark.anyio
async def test_stop_while_starting_waits_for_the_start_then_stops() -> None:
    server = two_tenants()
    stopped = count_stopped(server)
    started: list[ServerInfo] = []
    with anyio.fail_after(STOP_BOUND):

        async def start() -> None:
            started.append(await server.start())

        async with anyio.create_task_group() as tg:
            tg.start_soon(start)
            # start() claims the server before its first await; starting the app and hypercorn
            # takes many more scheduling rounds, so stop() runs while start() waits.
            while server._run is None:  # no public "starting" state to watch
                await anyio.lowlevel.checkpoint()
            assert started == []
            await server.stop()
            assert not server.is_running
        [info] = started
        assert len(stopped) == 1
        await assert_port_closed(info.port)


@pytest.mark.anyio
async def test_structured_serve_in_a_task_group() -> None:
    """`await tg.start(server.serve)` returns the ServerInfo; stop() from any task ends `serve`."""
    server = two_tenants()
    stopped = count_stopped(server)
    with anyio.fail_after(STOP_BOUND):
        async with anyio.create_task_group() as tg:
            info: ServerInfo = await tg.start(server.serve)
            assert server.is_running
            assert server.server_info() == info
            await assert_serves(info)
            with pytest.raises(ConfigurationError, match="already running"):
                await server.start()
            tg.start_soon(server.stop)
        assert not server.is_running
        assert len(stopped) == 1
        await assert_port_closed(info.port)

        # Cancelling the task group ends it too, with one `stopped`.
        async with anyio.create_task_group() as tg:
            info = await tg.start(server.serve)
            await assert_serves(info)
            tg.cancel_scope.cancel()
        assert not server.is_running
        assert len(stopped) == 2
        await assert_port_closed(info.port)


@pytest.mark.anyio
async def test_stop_inside_async_with_from_another_task() -> None:
    server = two_tenants()
    stopped = count_stopped(server)
    with anyio.fail_after(STOP_BOUND):
        async with server:
            info = server.server_info()
            assert info is not None
            async with anyio.create_task_group() as tg:
                tg.start_soon(server.stop)
            assert not server.is_running
            await assert_port_closed(info.port)
    assert len(stopped) == 1


@pytest.mark.anyio
async def test_stop_from_another_thread_is_a_clear_error(anyio_backend: str) -> None:
    """Another event loop cannot stop the server; anyio.from_thread.run(server.stop) can."""
    server = two_tenants()
    stopped = count_stopped(server)

    def stop_in_a_loop_of_its_own() -> None:
        anyio.run(server.stop, backend=anyio_backend)

    with anyio.fail_after(STOP_BOUND):
        info = await server.start()
        try:
            with pytest.raises(ConfigurationError, match=r"anyio\.from_thread\.run\(server\.stop\)") as caught:
                await anyio.to_thread.run_sync(stop_in_a_loop_of_its_own, abandon_on_cancel=True)
            assert "cancel scope" not in str(caught.value)
            assert server.is_running
            await assert_serves(info)
            await anyio.to_thread.run_sync(anyio.from_thread.run, server.stop)
        finally:
            await server.stop()
    assert len(stopped) == 1
    await assert_port_closed(info.port)


@pytest.mark.anyio
async def test_a_cancelled_start_leaves_no_server_behind() -> None:
    server = two_tenants()
    seen: list[str] = []
    server.on("started", lambda event: seen.append(event.name))
    server.on("stopped", lambda event: seen.append(event.name))
    with anyio.fail_after(STOP_BOUND):
        with anyio.CancelScope() as scope:
            scope.cancel()
            await server.start()
        await server.stop()  # waits for the run the cancelled start() began, if any
        assert not server.is_running
        assert seen in ([], ["started", "stopped"])
        # Nothing is left claimed: it starts again.
        async with server:
            assert server.is_running


@pytest.mark.anyio
async def test_stop_from_a_tool_of_the_server() -> None:
    """An admin tool that stops the server it runs in: bounded, `stopped` once."""
    server: PerBearerServer | None = None

    def admin() -> MCPServer:
        mcp = MCPServer("admin")

        @mcp.tool()
        async def shutdown() -> str:
            assert server is not None
            await server.stop()  # ends the session this call runs in: cancelled once stopped
            return "unreachable"

        return mcp

    server = create_per_bearer_server(shutdown_timeout=60.0).add_token(ALICE, admin)
    stopped = count_stopped(server)
    async with httpx.AsyncClient(timeout=STOP_BOUND) as client:
        with anyio.fail_after(STOP_BOUND):
            info = await server.start()
            session = await open_session(client, info.url, ALICE)
            began = anyio.current_time()
            call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "shutdown", "arguments": {}}}
            try:
                answer = await client.post(info.url, json=call, headers=headers(ALICE, session.session_id))
            except httpx.HTTPError:
                pass  # the server closing the connection is one way for the call to end
            else:
                # The call's SSE stream ends with its session, without a result.
                assert answer.status_code == 200
                assert "unreachable" not in answer.text
            await server.stop()
            assert anyio.current_time() - began < STOP_BOUND / 2
    assert len(stopped) == 1
    assert not server.is_running
    await assert_port_closed(info.port)
