"""Cancellation at every await point of the request path (httpcore's `test_cancellations.py` style).

A request runs under a cancel scope that fires exactly at one await point: a slow `receive` (the
body read, the GET/modern disconnect watch) or a slow `send` (response start, an SSE event, the
final body) cancels the scope and then blocks, which is what `anyio.move_on_after` does when its
deadline falls inside that await; for the app's own awaits (tenant server build, server lifespan
start, the handler of an initialize, a legacy or modern call, the SSE pump waiting for frames) the
scope is cancelled from outside once every task is blocked there. The cancellation must propagate
out of the app (never swallowed), and afterwards the session table, the per-tenant counts, the
server hosts and the events must be consistent: nothing in flight, no open stream, every live
session still expires, created/ended balance, and shutdown needs no deadline to end what is left.
No sleeping: `anyio.Event` handshakes and `wait_all_tasks_blocked` only.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
from mcp.server import MCPServer

from asgi_mcp import InMemoryEventStore, McpApp, Tenants
from asgi_mcp._legacy.dispatcher import SessionDispatcher
from tests.kit.mcp_servers import TOKEN_A, TOKEN_B, Lifespans, Probe, tenant_server
from tests.kit.memory import AsgiClient, TokenClient
from tests.kit.messages import LEGACY, call_tool, initialize, modern, notification, request
from tests.kit.polling import Recorder

pytestmark = pytest.mark.anyio

GUARD: Final = 10.0
IDLE: Final = 600.0
SHUTDOWN: Final = 3.0


# -- a fake connection that is slow at one chosen point ----------------------------------------------


@dataclass
class Wire:
    """ASGI `receive`/`send` for one request. `body` chunks are handed out, then `receive` waits for a
    disconnect that never comes. At `slow_receive` (the index of a receive call) or `slow_send` (the
    index of a sent message, or a predicate on it) the call cancels the request's scope and blocks:
    the deadline of a `move_on_after` expiring inside that very await."""

    body: list[bytes] = field(default_factory=list)
    slow_receive: int | None = None
    slow_send: int | Callable[[dict[str, Any]], bool] | None = None
    sent: list[dict[str, Any]] = field(default_factory=list)
    receives: int = 0
    reached: anyio.Event = field(default_factory=anyio.Event)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    cancelled: bool = False  # the cancellation came out of the app
    returned: bool = False  # the app returned normally

    def _slow(self) -> None:
        self.reached.set()
        self.scope.cancel()

    async def receive(self) -> dict[str, Any]:
        index = self.receives
        self.receives += 1
        if index == self.slow_receive:
            self._slow()
            await anyio.sleep_forever()
        if self.body:
            chunk = self.body.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(self.body)}
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(self, message: MutableMapping[str, Any]) -> None:
        message = dict(message)
        index = len(self.sent)
        slow = self.slow_send
        if (callable(slow) and slow(message)) or index == slow:
            self._slow()
            await anyio.sleep_forever()
        self.sent.append(message)

    @property
    def status(self) -> int | None:
        starts = [m for m in self.sent if m["type"] == "http.response.start"]
        return starts[0]["status"] if starts else None


def is_start(message: dict[str, Any]) -> bool:
    return bool(message["type"] == "http.response.start")


def is_body(message: dict[str, Any]) -> bool:
    return bool(message["type"] == "http.response.body")


def is_final_body(message: dict[str, Any]) -> bool:
    return is_body(message) and not message.get("more_body", False)


class Harness:
    def __init__(self, app: McpApp, client: AsgiClient, recorder: Recorder) -> None:
        self.app = app
        self.client = client
        self.recorder = recorder

    @property
    def runtime(self) -> Any:
        assert self.app._runtime is not None
        return self.app._runtime

    def scope(self, method: str, token: str | None, headers: dict[str, str]) -> dict[str, Any]:
        if token is not None:
            headers = {**headers, "authorization": f"Bearer {token}"}
        return self.client.scope(method, None, headers)

    def post_scope(self, token: str | None, session_id: str | None = None, **extra: str) -> dict[str, Any]:
        headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
        if session_id is not None:
            headers["mcp-session-id"] = session_id
            headers["mcp-protocol-version"] = LEGACY
        return self.scope("POST", token, {**headers, **extra})

    async def run(self, scope: dict[str, Any], wire: Wire, *, cancel_when: anyio.Event | None = None) -> Wire:
        """Serve one request on `wire` under its cancel scope; `cancel_when` cancels it from outside once
        that event is set and every task is blocked (the app waiting inside one of its own awaits)."""

        async def call() -> None:
            with wire.scope:
                await self.app(scope, wire.receive, wire.send)
                wire.returned = True
            wire.cancelled = wire.scope.cancelled_caught

        with anyio.fail_after(GUARD):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                if cancel_when is not None:
                    await cancel_when.wait()
                    await anyio.wait_all_tasks_blocked()
                    wire.reached.set()
                    wire.scope.cancel()
        assert wire.reached.is_set(), ("the request never reached its slow point", wire.sent)
        # Cancellation propagates out of the app: it is never swallowed or turned into a response.
        assert wire.cancelled, ("the app swallowed the cancellation", wire.sent)
        assert not wire.returned
        return wire

    async def settle(self) -> None:
        await anyio.wait_all_tasks_blocked()

    async def check(self, *, live: int, expire: bool = True) -> None:
        """The app's books balance after a cancelled request; then (`expire`) every session expires."""
        await self.settle()
        runtime, stats = self.runtime, self.app.stats()
        entries = list(runtime.table)
        assert stats["active_sessions"] == len(entries) == live
        assert stats["open_streams"] == runtime.legacy.open_streams == 0
        per_tenant = Counter(entry.tenant_id for entry in entries)
        assert stats["sessions_per_tenant"] == dict(per_tenant)
        assert sum(entry.in_flight for entry in entries) == 0  # nothing stuck in flight
        for entry in entries:
            assert entry.state.value == "active"
            assert not entry.value.listening
            assert entry.value.dispatcher.running
        # Each host counts exactly the live sessions it serves.
        hosts = Counter(id(entry.value.host) for entry in entries)
        for entry in entries:
            assert entry.value.host.sessions == hosts[id(entry.value.host)]
        self.check_events()
        # Every live session still expires: a cancelled request left no in-flight count behind.
        if expire:
            assert runtime.legacy.reap(anyio.current_time() + 2 * IDLE) == live
            assert len(runtime.table) == 0
            assert self.app.stats()["sessions_per_tenant"] == {}
            await self.settle()
            self.check_events()

    def check_events(self) -> None:
        created = Counter(e.session_id for e in self.recorder.of("session_created"))
        ended = Counter(e.session_id for e in self.recorder.of("session_ended"))
        assert all(n == 1 for n in created.values()), created
        assert all(n == 1 for n in ended.values()), ended
        assert set(ended) <= set(created), (created, ended)
        live = {entry.session_id for entry in self.runtime.table}
        assert set(created) - set(ended) == live

    async def open_session(self, token: str = TOKEN_A) -> str:
        return await TokenClient(self.client, token).open_session()


@asynccontextmanager
async def serving(app: McpApp, lifespans: Lifespans | None = None) -> AsyncIterator[Harness]:
    """Run the app; on exit, shutdown must end everything without its deadline and balance the books."""
    recorder = Recorder(app, ("session_created", "session_ended"))
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            async with app.lifespan_context():
                runtime = app._runtime
                assert runtime is not None
                yield Harness(app, AsgiClient(app, tg), recorder)
            tg.cancel_scope.cancel()
    # Shutdown ended every session, stream and server lifespan by itself: nothing needed its deadline.
    assert runtime is not None
    assert not runtime.task_group.cancel_scope.cancel_called, "shutdown hit its deadline"
    created = Counter(e.session_id for e in recorder.of("session_created"))
    ended = Counter(e.session_id for e in recorder.of("session_ended"))
    assert created == ended
    assert all(n == 1 for n in created.values())
    if lifespans is not None:
        assert lifespans.entered == lifespans.exited


def tenants_app(*factories: tuple[str, Callable[[], Any]], **options: Any) -> McpApp:
    tenants = Tenants()
    for token, factory in factories:
        tenants.add(token, factory, label="alpha" if token == TOKEN_A else "bravo")
    options.setdefault("session_idle_timeout", IDLE)
    options.setdefault("shutdown_timeout", SHUTDOWN)
    options.setdefault("keepalive_interval", 3600.0)
    return McpApp(tenants=tenants, **options)


def simple_app(gate: Probe | None = None, lifespans: Lifespans | None = None, **options: Any) -> McpApp:
    return tenants_app(
        (TOKEN_A, lambda: tenant_server("alpha", gate=gate, lifespans=lifespans)),
        (TOKEN_B, lambda: tenant_server("bravo", lifespans=lifespans)),
        **options,
    )


def body_of(message: dict[str, Any]) -> list[bytes]:
    return [json.dumps(message).encode()]


# -- body read -----------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["initialize", "session request", "modern request"])
@pytest.mark.parametrize("slow_at", [0, 1], ids=["first-chunk", "second-chunk"])
async def test_cancelled_while_reading_the_body(target: str, slow_at: int) -> None:
    lifespans = Lifespans()
    app = simple_app(lifespans=lifespans)
    async with serving(app, lifespans) as h:
        existing = await h.open_session()
        if target == "initialize":
            scope, raw = h.post_scope(TOKEN_A), json.dumps(initialize(0)).encode()
        elif target == "session request":
            scope, raw = h.post_scope(TOKEN_A, existing), json.dumps(request(5, "tools/list")).encode()
        else:
            body, headers = modern(5, "tools/list")
            scope, raw = h.post_scope(TOKEN_A, **headers), json.dumps(body).encode()
        wire = await h.run(scope, Wire(body=[raw[:3], raw[3:]], slow_receive=slow_at))
        assert wire.sent == []
        await h.check(live=1)


# -- initialize: tenant server build, server lifespan start, the initialize handler, its response -----


async def test_cancelled_while_the_tenant_server_is_built() -> None:
    """The single-flight build is cancelled: the next request builds afresh, and only that server runs."""
    calls = 0
    entered, release = anyio.Event(), anyio.Event()
    lifespans = Lifespans()

    async def factory() -> MCPServer:
        nonlocal calls
        calls += 1
        if calls == 1:
            entered.set()
            await release.wait()  # never set: the build is cancelled here
        return tenant_server("alpha", lifespans=lifespans)

    app = tenants_app((TOKEN_A, factory))
    async with serving(app, lifespans) as h:
        waiter_statuses: list[int] = []

        async def waiter() -> None:
            # A second initialize waits for the first one's build; it must not hang when that is cancelled.
            response = await TokenClient(h.client, TOKEN_A).post(initialize(1), version=None)
            waiter_statuses.append(response.status)
            await response.read()

        go = anyio.Event()

        async def first() -> None:
            await h.run(h.post_scope(TOKEN_A), Wire(body=body_of(initialize(0))), cancel_when=go)

        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await entered.wait()
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()  # the waiter now waits for the first request's build
            go.set()
        assert waiter_statuses == [200]
        assert calls == 2
        assert app.stats()["built_servers"] == 1
        assert lifespans.entered == 1
        assert app._tenant_servers is not None
        assert app._tenant_servers._building == {}
        await h.check(live=1)


def slow_lifespan_server(name: str, started: anyio.Event, release: anyio.Event, lifespans: Lifespans) -> MCPServer:
    @asynccontextmanager
    async def lifespan(server: Any) -> AsyncIterator[dict[str, Any]]:
        lifespans.entered += 1
        try:
            started.set()
            await release.wait()
            yield {}
        finally:
            lifespans.exited += 1

    mcp: MCPServer = MCPServer(name, version="1.0.0", lifespan=lifespan)

    @mcp.tool()
    def whoami() -> str:
        return name

    return mcp


async def test_cancelled_while_the_server_lifespan_starts() -> None:
    """A build cancelled while its server's lifespan is still entering leaves no server running."""
    started, release = anyio.Event(), anyio.Event()
    lifespans = Lifespans()
    builds = 0

    def factory() -> MCPServer:
        nonlocal builds
        builds += 1
        return slow_lifespan_server("alpha", started, release, lifespans)

    app = tenants_app((TOKEN_A, factory))
    async with serving(app, lifespans) as h:
        await h.run(h.post_scope(TOKEN_A), Wire(body=body_of(initialize(0))), cancel_when=started)
        release.set()  # the orphaned lifespan finishes entering now
        await h.settle()
        assert app.stats()["built_servers"] == 0
        assert lifespans.entered == lifespans.exited == 1, lifespans  # it was stopped, not left running
        # The next request builds and serves normally.
        await h.open_session()
        assert builds == 2
        assert lifespans.entered - lifespans.exited == 1
        await h.check(live=1)


async def test_cancelled_while_initialize_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """initialize's handler is still running (the session is OPENING) when the request is cancelled:
    the session was never announced, so it ends silently, and its slot is free again."""
    entered = anyio.Event()
    original = SessionDispatcher.run_admitted

    async def slow_initialize(self: SessionDispatcher, method: str, *args: Any) -> None:
        if method == "initialize":
            entered.set()
            await anyio.sleep_forever()
        await original(self, method, *args)

    monkeypatch.setattr(SessionDispatcher, "run_admitted", slow_initialize)
    lifespans = Lifespans()
    app = simple_app(lifespans=lifespans, max_sessions=1)
    async with serving(app, lifespans) as h:
        await h.run(h.post_scope(TOKEN_A), Wire(body=body_of(initialize(0))), cancel_when=entered)
        await h.check(live=0)
        assert h.recorder.of("session_created") == []
        assert h.recorder.of("session_ended") == []
        monkeypatch.setattr(SessionDispatcher, "run_admitted", original)
        await h.open_session()  # the one slot (max_sessions=1) was given back
        await h.check(live=1)


@pytest.mark.parametrize("slow_send", [is_start, is_final_body], ids=["response-start", "response-body"])
@pytest.mark.parametrize("json_response", [False, True], ids=["sse", "json"])
async def test_cancelled_while_sending_the_initialize_answer(
    slow_send: Callable[[dict[str, Any]], bool], json_response: bool
) -> None:
    """The session was created, but its id never reached the client: it ends (and says so) at once."""
    lifespans = Lifespans()
    app = simple_app(lifespans=lifespans, json_response=json_response)
    async with serving(app, lifespans) as h:
        await h.run(h.post_scope(TOKEN_A), Wire(body=body_of(initialize(0)), slow_send=slow_send))
        await h.check(live=0)
        reasons = [e.reason for e in h.recorder.of("session_ended")]
        assert reasons in ([], ["initialize_failed"])
        # The tenant's server stays built and serves the next session.
        await h.open_session()
        await h.check(live=1)


# -- a legacy request's SSE stream ------------------------------------------------------------------


@pytest.mark.parametrize("slow_send", [0, 1, is_final_body], ids=["response-start", "first-event", "final-body"])
@pytest.mark.parametrize("with_store", [False, True], ids=["no-store", "event-store"])
async def test_cancelled_in_the_sse_pump(slow_send: int | Callable[[dict[str, Any]], bool], with_store: bool) -> None:
    """The call's connection is cancelled mid-stream, its send stuck for good; the session stays and
    still expires. The handler runs shielded, so the stuck send is abandoned by the keep-alive ticker."""
    app = simple_app(event_store=InMemoryEventStore() if with_store else None, keepalive_interval=0.2)
    async with serving(app) as h:
        session_id = await h.open_session()
        await h.run(h.post_scope(TOKEN_A, session_id), Wire(body=body_of(call_tool(7, "whoami")), slow_send=slow_send))
        await h.check(live=1)


async def cancel_a_running_call(h: Harness, session_id: str, gate: Probe) -> Wire:
    """A call to the blocking tool, cancelled from outside while the tool runs, which is released
    once the cancellation came: the app call returns (cancelled) only after the shielded handler
    finished."""
    wire = Wire(body=body_of(call_tool(7, "block")))

    async def release_once_cancelled() -> None:
        await wire.reached.wait()
        gate.release.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(release_once_cancelled)
        await h.run(h.post_scope(TOKEN_A, session_id), wire, cancel_when=gate.started)
    return wire


@pytest.mark.parametrize("json_response", [False, True], ids=["sse", "json"])
async def test_cancelled_while_the_pump_waits_for_a_running_call(json_response: bool) -> None:
    """Cancelled while the tool runs: in the legacy era a dropped connection is not a cancellation,
    so the tool finishes either way (the request's task holds the cancellation until the shielded
    handler is done; on SSE its answer goes to the event store), and the session then goes idle
    and expires."""
    gate = Probe()
    app = simple_app(gate=gate, json_response=json_response)
    async with serving(app) as h:
        session_id = await h.open_session()
        await cancel_a_running_call(h, session_id, gate)
        await gate.finished.wait()
        assert not gate.cancelled.is_set()
        await h.check(live=1)


class NetworkLikeStore(InMemoryEventStore):
    """Yields on every write, as a store across the network does (and is opaque to the event log)."""

    async def store_event(self, stream_id: Any, message: Any) -> Any:
        await anyio.lowlevel.checkpoint()
        return await super().store_event(stream_id, message)


async def test_an_answer_settled_after_the_cancellation_is_stored_for_the_resuming_client() -> None:
    """Cancelled while the tool runs (a server cancelling on a dropped connection): the tool finishes,
    its answer goes to the event store though its request is cancelled, and resuming finds it."""
    gate = Probe()
    app = simple_app(gate=gate, event_store=NetworkLikeStore())
    async with serving(app) as h:
        session_id = await h.open_session()
        wire = await cancel_a_running_call(h, session_id, gate)
        priming = wire.sent[1]["body"].decode()
        assert priming.startswith("id: ")
        headers = {"accept": "text/event-stream", "mcp-session-id": session_id, "mcp-protocol-version": LEGACY}
        headers["last-event-id"] = priming.split("\n")[0].removeprefix("id: ")
        resumed = await h.client.request("GET", headers={**headers, "authorization": f"Bearer {TOKEN_A}"})
        [answer] = await resumed.messages()
        assert answer["id"] == 7
        assert answer["result"]["content"][0]["text"] == "released by alpha"
        await h.check(live=1)


async def test_cancelled_while_posting_a_notification() -> None:
    app = simple_app()
    async with serving(app) as h:
        session_id = await h.open_session()
        wire = Wire(body=body_of(notification("notifications/roots/list_changed")), slow_send=is_start)
        await h.run(h.post_scope(TOKEN_A, session_id), wire)
        await h.check(live=1)


# -- GET streams ----------------------------------------------------------------------------------


def get_scope(h: Harness, session_id: str, token: str = TOKEN_A, **extra: str) -> dict[str, Any]:
    headers = {"accept": "text/event-stream", "mcp-session-id": session_id, "mcp-protocol-version": LEGACY}
    return h.scope("GET", token, {**headers, **extra})


@pytest.mark.parametrize("point", ["response-start", "priming-event", "disconnect-watch", "pump-wait"])
async def test_cancelled_get_stream(point: str) -> None:
    """A cancelled GET frees the session's one standalone stream: the next GET gets it, not 409."""
    app = simple_app(event_store=InMemoryEventStore())
    async with serving(app) as h:
        session_id = await h.open_session()
        if point == "response-start":
            wire = Wire(slow_send=0)
        elif point == "priming-event":
            wire = Wire(slow_send=1)
        elif point == "disconnect-watch":
            wire = Wire(slow_receive=0)
        else:
            wire = Wire()
        cancel_when = None
        if point == "pump-wait":
            cancel_when = anyio.Event()
            cancel_when.set()
        await h.run(get_scope(h, session_id), wire, cancel_when=cancel_when)
        await h.check(live=1, expire=False)
        again = await TokenClient(h.client, TOKEN_A).get(session_id)
        assert again.status == 200
        again.disconnect()
        await again.app_done.wait()
        await h.check(live=1)


async def test_cancelled_get_replay() -> None:
    """Cancelled while replaying a finished stream's events after Last-Event-ID."""
    app = simple_app(event_store=InMemoryEventStore())
    async with serving(app) as h:
        a = TokenClient(h.client, TOKEN_A)
        session_id = await h.open_session()
        response = await a.post(call_tool(3, "whoami"), session_id=session_id)
        events = await response.events()
        priming = events[0].id
        assert priming is not None
        await h.run(get_scope(h, session_id, **{"last-event-id": priming}), Wire(slow_send=1))
        await h.check(live=1)


# -- DELETE ---------------------------------------------------------------------------------------


async def test_cancelled_delete_still_ended_the_session() -> None:
    app = simple_app()
    async with serving(app) as h:
        session_id = await h.open_session()
        other = await h.open_session(TOKEN_B)
        headers = {"mcp-session-id": session_id, "mcp-protocol-version": LEGACY}
        await h.run(h.scope("DELETE", TOKEN_A, headers), Wire(slow_send=is_start))
        await h.check(live=1)
        assert [(e.session_id, e.reason) for e in h.recorder.of("session_ended")] == [
            (session_id, "deleted"),
            (other, "idle_timeout"),
        ]


# -- modern exchanges -----------------------------------------------------------------------------


@pytest.mark.parametrize("point", ["handler", "disconnect-watch", "response-start", "final-body"])
async def test_cancelled_modern_exchange(point: str) -> None:
    """A 2026-07-28 exchange cancelled anywhere: its handler stops and nothing touches the sessions."""
    gate = Probe()
    lifespans = Lifespans()
    app = simple_app(gate=gate, lifespans=lifespans)
    async with serving(app, lifespans) as h:
        session_id = await h.open_session()
        tool = "block" if point in ("handler", "disconnect-watch") else "whoami"
        body, headers = modern(9, "tools/call", {"name": tool, "arguments": {}})
        wire = Wire(body=body_of(body))
        cancel_when = None
        if point == "handler":
            cancel_when = gate.started
        elif point == "disconnect-watch":
            wire.slow_receive = 1  # the body was receive 0; the watch for a disconnect is receive 1
        elif point == "response-start":
            wire.slow_send = is_start
        else:
            wire.slow_send = is_final_body
        await h.run(h.post_scope(TOKEN_A, **headers), wire, cancel_when=cancel_when)
        if tool == "block":
            with anyio.fail_after(GUARD):
                await gate.finished.wait()
            assert gate.cancelled.is_set()
        assert h.recorder.of("session_ended") == []
        assert session_id in {entry.session_id for entry in h.runtime.table}
        await h.check(live=1)


async def test_cancelled_modern_exchange_while_its_server_is_built() -> None:
    entered = anyio.Event()
    lifespans = Lifespans()
    calls = 0

    async def factory() -> MCPServer:
        nonlocal calls
        calls += 1
        if calls == 1:
            entered.set()
            await anyio.sleep_forever()
        return tenant_server("alpha", lifespans=lifespans)

    app = tenants_app((TOKEN_A, factory))
    async with serving(app, lifespans) as h:
        body, headers = modern(9, "tools/list")
        await h.run(h.post_scope(TOKEN_A, **headers), Wire(body=body_of(body)), cancel_when=entered)
        assert app.stats()["built_servers"] == 0
        answer = await TokenClient(h.client, TOKEN_A).modern(10, "tools/list")
        assert answer.status == 200
        await answer.read()
        assert calls == 2
        await h.check(live=0)


# -- many at once ---------------------------------------------------------------------------------


async def test_many_cancelled_requests_leave_nothing_behind() -> None:
    """Every kind of request, each cancelled at a different point, concurrently on two tenants.
    (A short keep-alive interval: the stuck sends of the shielded SSE calls are abandoned after one.)"""
    gate = Probe()
    lifespans = Lifespans()
    app = simple_app(gate=gate, lifespans=lifespans, event_store=InMemoryEventStore(), keepalive_interval=0.2)
    async with serving(app, lifespans) as h:
        sa, sb = await h.open_session(TOKEN_A), await h.open_session(TOKEN_B)
        plans: list[tuple[dict[str, Any], Wire]] = [
            (h.post_scope(TOKEN_A), Wire(body=body_of(initialize(0)), slow_send=is_start)),
            (h.post_scope(TOKEN_B), Wire(body=body_of(initialize(0)), slow_receive=0)),
            (h.post_scope(TOKEN_A, sa), Wire(body=body_of(call_tool(1, "whoami")), slow_send=1)),
            (h.post_scope(TOKEN_B, sb), Wire(body=body_of(call_tool(2, "whoami")), slow_send=is_final_body)),
            (get_scope(h, sa), Wire(slow_send=1)),
            (get_scope(h, sb, TOKEN_B), Wire(slow_receive=0)),
        ]
        async with anyio.create_task_group() as tg:
            for scope, wire in plans:
                tg.start_soon(h.run, scope, wire)
        await h.check(live=2)
