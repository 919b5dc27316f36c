"""A model-based test of the whole app: `McpApp(tenants=...)` driven through its ASGI interface, in memory.

Hypothesis picks a program of steps (open sessions with registered and unknown tokens, requests,
notifications, client responses, blocking tool calls that are released, cancelled or abandoned
mid-stream, GET streams opened and dropped, replays with `Last-Event-ID`, DELETE, idle and drain
expiry, token add/remove/update under both policies with short and long drain timeouts, modern
exchanges, concurrent bursts) and a plain-Python model predicts what each step must do. After every
step the app must agree with the model: `stats()`, the session table (owner, state, in-flight
count; no session reachable with another token), the running server lifespans, and the lifecycle
events (`session_created`/`session_ended`, with the reason). Every response must carry only its
own request id. At teardown the app's lifespan exits and nothing is left: no session task, no
server lifespan, no open stream, no unfinished response, and shutdown did not need its deadline.

`RuleBasedStateMachine` has no async support (HypothesisWorks/hypothesis#4107), so each machine
owns a blocking portal for its backend (`anyio.from_thread.start_blocking_portal`) and runs every
async step through it; the app, its lifespan and the in-memory client live in one task of that
portal for the whole example, and the portal closes in `teardown`.

Profiles (this module's state machine only; other property tests keep their own settings):
    ci   (default)            30 examples x 25 steps per backend, derandomized: a failure
                              reproduces by running the same command again.
    long (HYPOTHESIS_PROFILE=long)  300 examples x 50 steps, random, with the example database.

Rerunning a failure: Hypothesis prints the minimal failing program (the steps, as code) and a
`@reproduce_failure(...)` line (`print_blob`); `ASGI_MCP_STATEFUL_REPRODUCE="<version> <blob>"` applies it
without editing the file. `ASGI_MCP_STATEFUL_SEED=<int>` (or pytest's `--hypothesis-seed=<int>`
with the long profile) pins the random seed:

    HYPOTHESIS_PROFILE=long ASGI_MCP_STATEFUL_SEED=1234 pytest -p anyio tests/system/test_stateful.py -k trio
"""

from __future__ import annotations

import itertools
import json
import os
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, reproduce_failure, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from mcp.server import MCPServer

from asgi_mcp import InMemoryEventStore, McpApp, Tenants
from asgi_mcp._core.errors import REQUEST_CANCELLED
from asgi_mcp._core.states import SessionState
from asgi_mcp._legacy.session import LegacySession
from asgi_mcp._tenancy.tenants import token_digest
from tests.kit.memory import AsgiClient, Response
from tests.kit.messages import LEGACY, modern, notification, request
from tests.kit.messages import initialize as initialize_message

T = TypeVar("T")

settings.register_profile(
    "ci",
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.register_profile(
    "long",
    max_examples=300,
    stateful_step_count=50,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
PROFILE: Final = os.environ.get("HYPOTHESIS_PROFILE", "ci")

# Tokens and their fixed tenant labels; NEVER is never registered.
TOKENS: Final = {
    "sk-st-alpha-4Rk8Qw2Zp": "alpha",
    "sk-st-bravo-9Lm3Vx7Cn": "bravo",
    "sk-st-charlie-5Hj1Tb6Yd": "charlie",
}
NEVER: Final = "sk-st-never-2Gf7Ks0Pe"
POOL: Final = (*TOKENS, NEVER)
OWNERS: Final = {token: "t:" + token_digest(token).hex() for token in POOL}

IDLE_TIMEOUT: Final = 1000.0
LONG_DRAIN: Final = 100.0
SHUTDOWN_TIMEOUT: Final = 10.0
STEP_GUARD: Final = 10.0  # seconds one step may take before it counts as hung

tokens = st.sampled_from(POOL)
policies = st.sampled_from(("close", "drain"))
drain_timeouts = st.sampled_from((0.0, LONG_DRAIN))
picks = st.integers(min_value=0, max_value=63)

EXAMPLES: Counter[str] = Counter()
STEPS: Counter[str] = Counter()


# -- the servers ------------------------------------------------------------------------------------


@dataclass
class Blocker:
    started: anyio.Event = field(default_factory=anyio.Event)
    release: anyio.Event = field(default_factory=anyio.Event)


@dataclass
class World:
    """What the servers share with the test: lifespan counters and the blocking tool's handshakes."""

    running: Counter[str] = field(default_factory=Counter)  # server name -> lifespans entered, not exited
    entered: int = 0
    exited: int = 0
    blockers: dict[str, Blocker] = field(default_factory=dict)

    def server(self, name: str) -> MCPServer:
        world = self

        @asynccontextmanager
        async def lifespan(server: Any) -> AsyncIterator[dict[str, Any]]:
            world.entered += 1
            world.running[name] += 1
            try:
                yield {}
            finally:
                world.exited += 1
                world.running[name] -= 1
                if not world.running[name]:
                    del world.running[name]

        mcp: MCPServer = MCPServer(name, version="1.0.0", lifespan=lifespan)

        @mcp.tool()
        def echo(text: str) -> str:
            return f"{name}:{text}"

        @mcp.tool()
        async def block(key: str) -> str:
            blocker = world.blockers[key]
            blocker.started.set()
            await blocker.release.wait()
            return f"{name}:{key}"

        return mcp

    def factory(self, name: str) -> Callable[[], MCPServer]:
        return lambda: self.server(name)


# -- the model --------------------------------------------------------------------------------------


@dataclass(eq=False)
class Call:
    """A blocking tool call in flight on a session's POST stream."""

    key: str
    request_id: int | str
    response: Response
    connected: bool = True


@dataclass(eq=False)
class Session:
    session_id: str
    token: str
    tenant: str
    server: str  # name of the server (tenant + generation) that serves it
    state: SessionState = SessionState.ACTIVE
    end_when_idle: bool = False
    get: Response | None = None
    calls: dict[str, Call] = field(default_factory=dict)
    # Event ids of finished request streams (their priming event), for replay: id -> request id.
    finished_streams: dict[str, int | str] = field(default_factory=dict)

    @property
    def idle(self) -> bool:
        return self.get is None and not self.calls

    @property
    def in_flight(self) -> int:
        return len(self.calls) + (self.get is not None)


def tool_call(request_id: int | str, name: str, **arguments: str) -> dict[str, Any]:
    return request(request_id, "tools/call", {"name": name, "arguments": arguments})


def only_own_ids(messages: list[dict[str, Any]], request_id: int | str | None) -> None:
    """No message on a stream answers (or is) a request other than `request_id`."""
    for message in messages:
        if "id" in message:
            assert message["id"] == request_id, (request_id, message)


def read_nowait(response: Response) -> None:
    """Take whatever the app has sent so far, without waiting (feeds the response's SSE decoder)."""
    while not response.complete:
        try:
            message = response._messages.receive_nowait()
        except (anyio.WouldBlock, anyio.EndOfStream):
            return
        chunk = bytes(message.get("body", b""))
        response.body += chunk
        response._events.extend(response._decoder.feed(chunk))
        if not message.get("more_body", False):
            response.complete = True


def buffered_messages(response: Response) -> list[dict[str, Any]]:
    return [json.loads(event.data) for event in response._events if event.data]


@dataclass(frozen=True)
class Echoed:
    status: int
    text: str | None = None
    priming_id: str | None = None  # the request stream's priming event id (for Last-Event-ID)


def text_of(answer: dict[str, Any]) -> str:
    assert "result" in answer, answer
    return str(answer["result"]["content"][0]["text"])


class Harness:
    """Lives in the portal's event loop: the app, its lifespan, the client, the event recorder."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.tenants = Tenants()
        self.app = McpApp(
            tenants=self.tenants,
            session_idle_timeout=IDLE_TIMEOUT,
            keepalive_interval=3600.0,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
            event_store=InMemoryEventStore(),
        )
        self.created: list[str] = []
        self.ended: list[tuple[str, str]] = []
        self.app.on("session_created", lambda event: self.created.append(event.session_id))
        self.app.on("session_ended", lambda event: self.ended.append((event.session_id, event.reason)))
        self.responses: list[Response] = []
        self.sessions_seen: dict[str, LegacySession] = {}
        self.runtime: Any = None
        self.shutdown_deadline_hit = False
        self.unfinished_after_exit: list[Response] = []
        self._stop: anyio.Event | None = None
        self._client: AsgiClient | None = None

    @property
    def client(self) -> AsgiClient:
        assert self._client is not None
        return self._client

    async def main(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        self._stop = anyio.Event()
        async with anyio.create_task_group() as client_tg:
            self._client = AsgiClient(self.app, client_tg)
            async with self.app.lifespan_context():
                self.runtime = self.app._runtime
                task_status.started()
                await self._stop.wait()
            # Shutdown ended every session; it must not have needed its deadline to cancel anything.
            self.shutdown_deadline_hit = self.runtime.task_group.cancel_scope.cancel_called
            # Every response ends by itself once its session is gone.
            with anyio.move_on_after(STEP_GUARD):
                while not all(r.app_done.is_set() for r in self.responses):
                    await anyio.wait_all_tasks_blocked()
                    await anyio.lowlevel.checkpoint()
            self.unfinished_after_exit = [r for r in self.responses if not r.app_done.is_set()]
            client_tg.cancel_scope.cancel()

    def stop(self) -> None:
        assert self._stop is not None
        self._stop.set()

    def track(self, response: Response) -> Response:
        self.responses.append(response)
        return response

    def auth(self, token: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {token}"} if token is not None else {}

    async def post(
        self, message: dict[str, Any], token: str | None, session_id: str | None = None, *, version: str | None = LEGACY
    ) -> Response:
        return self.track(
            await self.client.post(message, session_id=session_id, version=version, headers=self.auth(token))
        )

    async def get(self, token: str, session_id: str, last_event_id: str | None = None) -> Response:
        headers = {"accept": "text/event-stream", "mcp-session-id": session_id, "mcp-protocol-version": LEGACY}
        if last_event_id is not None:
            headers["last-event-id"] = last_event_id
        return self.track(await self.client.request("GET", headers={**headers, **self.auth(token)}))

    async def delete(self, token: str, session_id: str) -> Response:
        headers = {"mcp-session-id": session_id, "mcp-protocol-version": LEGACY}
        return self.track(await self.client.request("DELETE", headers={**headers, **self.auth(token)}))

    async def open_session(self, token: str | None) -> tuple[int, str | None]:
        response = self.track(await self.client.post(initialize_message(0), headers=self.auth(token)))
        if response.status != 200:
            await response.read()
            return response.status, None
        messages = await response.messages()
        assert messages[-1]["id"] == 0, messages
        assert messages[-1]["result"]["protocolVersion"] == LEGACY, messages
        session_id = response.session_id
        assert session_id is not None
        acked = await self.post(notification("notifications/initialized"), token, session_id)
        assert acked.status == 202, await acked.read()
        await acked.read()
        return 200, session_id

    async def echo(self, token: str, session_id: str, request_id: int | str, text: str) -> Echoed:
        """A tools/call on a session: its status, and its answer's text (checked to answer this request)."""
        response = await self.post(tool_call(request_id, "echo", text=text), token, session_id)
        if response.status != 200:
            body = await response.read()
            if body and response.content_type == "application/json":
                assert json.loads(body).get("id") in (request_id, None), body
            return Echoed(response.status)
        events = await response.events()
        messages = [json.loads(e.data) for e in events if e.data]
        only_own_ids(messages, request_id)
        assert messages, response.body
        assert messages[-1]["id"] == request_id, messages
        priming = events[0].id if events and not events[0].data else None
        return Echoed(200, text_of(messages[-1]), priming)

    async def modern_echo(self, token: str | None, request_id: int | str, text: str) -> Echoed:
        body, headers = modern(request_id, "tools/call", {"name": "echo", "arguments": {"text": text}})
        response = self.track(await self.client.post(body, headers={**headers, **self.auth(token)}))
        raw = await response.read()
        if response.status != 200:
            return Echoed(response.status)
        assert response.content_type == "application/json", response.raw_headers
        answer = json.loads(raw)
        assert answer["id"] == request_id, answer
        return Echoed(200, text_of(answer))

    def observe_sessions(self) -> None:
        for entry in self.runtime.table:
            self.sessions_seen.setdefault(entry.session_id, entry.value)


class AppMachine(RuleBasedStateMachine):
    """One example: a fresh portal, app and model; see the module docstring."""

    backend = "asyncio"

    def __init__(self) -> None:
        super().__init__()
        self._portal_cm = anyio.from_thread.start_blocking_portal(self.backend)
        self.portal = self._portal_cm.__enter__()
        self.world = World()
        self.harness: Harness = self.portal.call(self._make_harness)
        self.main_future, _ = self.portal.start_task(self.harness.main)
        self.ids = itertools.count(1)
        self.generation = itertools.count(1)
        # The model.
        self.registered: dict[str, str] = {}  # token -> server name of its current generation
        self.built: set[str] = set()  # tokens whose current server has been built
        self.live: dict[str, Session] = {}
        self.created: list[str] = []
        self.ended: dict[str, str] = {}  # session id -> reason
        self.ended_tokens: dict[str, str] = {}
        self.orphans: list[tuple[Response, int | str | None]] = []  # responses of ended sessions
        EXAMPLES[self.backend] += 1

    async def _make_harness(self) -> Harness:
        return Harness(self.world)

    def run(self, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        async def guarded() -> T:
            with anyio.fail_after(STEP_GUARD):
                return await func(*args)

        STEPS[self.backend] += 1
        return self.portal.call(guarded)

    def sync(self, func: Callable[..., T], *args: Any) -> T:
        return self.portal.call(func, *args)

    # -- model helpers ------------------------------------------------------------------------------

    def _server_name(self, token: str) -> str:
        return f"{TOKENS[token]}-g{next(self.generation)}"

    def _end(self, session: Session, reason: str) -> None:
        del self.live[session.session_id]
        self.ended[session.session_id] = reason
        self.ended_tokens[session.session_id] = session.token
        # Whatever the session had in flight ends with it, unanswered.
        for call in session.calls.values():
            self.orphans.append((call.response, None))
        if session.get is not None:
            self.orphans.append((session.get, None))

    def _exchange_done(self, session: Session) -> None:
        """An exchange of `session` finished: a draining session of a removed token ends once idle."""
        if session.session_id in self.live and session.end_when_idle and session.idle:
            self._end(session, "token_removed")

    def _addressable(self, session: Session) -> bool:
        return session.token in self.registered

    def _pick(self, items: list[T], pick: int) -> T:
        return items[pick % len(items)]

    def _sessions(self) -> list[Session]:
        return list(self.live.values())

    def _calls(self) -> list[tuple[Session, Call]]:
        return [(s, c) for s in self.live.values() for c in s.calls.values()]

    def _request_id(self) -> int | str:
        n = next(self.ids)
        return n if n % 2 else f"r-{n}"

    def _open_model_session(self, token: str, session_id: str) -> None:
        self.built.add(token)
        self.live[session_id] = Session(session_id, token, TOKENS[token], self.registered[token])
        self.created.append(session_id)

    # -- token registry ------------------------------------------------------------------------------

    @initialize()
    def start_with_two_tenants_and_sessions(self) -> None:
        first, second = tuple(TOKENS)[:2]
        for token in (first, second):
            self._add(token)
        with pytest.raises(ValueError, match="already registered"):
            self.sync(lambda: self.harness.tenants.add(first, self.world.factory("dup"), label="dup"))
        for token in (first, first, second):
            self.open_session(token)

    def _add(self, token: str) -> None:
        name, label = self._server_name(token), TOKENS[token]

        def add() -> str:
            return self.harness.tenants.add(token, self.world.factory(name), label=label)

        assert self.sync(add) == label
        self.registered[token] = name

    @precondition(lambda self: len(self.registered) < len(TOKENS))
    @rule(pick=picks)
    def add_token(self, pick: int) -> None:
        self._add(self._pick([t for t in TOKENS if t not in self.registered], pick))

    def _follow(self, token: str, *, removed: bool, policy: str, drain_timeout: float) -> None:
        reason = "token_removed" if removed else "token_updated"
        for session in [s for s in self._sessions() if s.tenant == TOKENS[token]]:
            if policy == "close":
                self._end(session, reason)
                continue
            session.state = SessionState.DRAINING
            session.end_when_idle = session.end_when_idle or removed
            if session.end_when_idle and session.idle:
                self._end(session, reason)
            elif drain_timeout == 0:
                self._end(session, "drain_timeout")  # the app's reaper, at once

    @rule(token=tokens, policy=policies, drain_timeout=drain_timeouts)
    def remove_token(self, token: str, policy: str, drain_timeout: float) -> None:
        def remove() -> bool:
            return self.harness.tenants.remove(token, policy=policy, drain_timeout=drain_timeout)  # type: ignore[arg-type]

        assert self.sync(remove) is (token in self.registered)
        if token not in self.registered:
            return
        del self.registered[token]
        self.built.discard(token)
        self._follow(token, removed=True, policy=policy, drain_timeout=drain_timeout)

    @rule(token=tokens, policy=policies, drain_timeout=drain_timeouts)
    def update_token(self, token: str, policy: str, drain_timeout: float) -> None:
        name = self._server_name(token) if token in TOKENS else "never"

        def update() -> bool:
            return self.harness.tenants.update(
                token,
                self.world.factory(name),
                policy=policy,  # type: ignore[arg-type]
                drain_timeout=drain_timeout,
            )

        assert self.sync(update) is (token in self.registered)
        if token not in self.registered:
            return
        self.registered[token] = name
        self.built.discard(token)
        self._follow(token, removed=False, policy=policy, drain_timeout=drain_timeout)

    # -- sessions ------------------------------------------------------------------------------------

    @rule(token=st.one_of(tokens, st.none()))
    def open_session(self, token: str | None) -> None:
        status, session_id = self.run(self.harness.open_session, token)
        if token in self.registered:
            assert status == 200
            assert session_id is not None
            self._open_model_session(token, session_id)
        else:
            assert status == 401

    @precondition(lambda self: bool(self.live))
    @rule(pick=picks)
    def echo(self, pick: int) -> None:
        session = self._pick(self._sessions(), pick)
        request_id = self._request_id()
        echoed = self.run(self.harness.echo, session.token, session.session_id, request_id, "hi")
        if not self._addressable(session):
            assert echoed.status == 401
            return
        # Served by its own server: the old generation's while draining after an update.
        assert (echoed.status, echoed.text) == (200, f"{session.server}:hi")
        assert echoed.priming_id is not None  # 2025-11-25 with an event store: primed, resumable
        session.finished_streams[echoed.priming_id] = request_id
        self._exchange_done(session)

    @precondition(lambda self: bool(self.live))
    @rule(
        pick=picks,
        message=st.sampled_from(
            (
                notification("notifications/roots/list_changed"),
                notification("notifications/cancelled", {"requestId": 10**9}),
                {"jsonrpc": "2.0", "id": 10**9, "result": {}},
                {"jsonrpc": "2.0", "id": 10**9 + 1, "error": {"code": -1, "message": "no"}},
            )
        ),
    )
    def notify_or_respond(self, pick: int, message: dict[str, Any]) -> None:
        """Notifications, and answers to server requests nobody waits for: 202, nothing else happens."""
        session = self._pick(self._sessions(), pick)

        async def send() -> int:
            response = await self.harness.post(message, session.token, session.session_id)
            await response.read()
            return response.status

        status = self.run(send)
        assert status == (202 if self._addressable(session) else 401)
        self._exchange_done(session)

    # -- blocking calls: released, cancelled, abandoned ----------------------------------------------

    @precondition(lambda self: bool(self.live))
    @rule(pick=picks)
    def start_blocking_call(self, pick: int) -> None:
        session = self._pick(self._sessions(), pick)
        request_id = self._request_id()
        key = f"k{next(self.ids)}"

        async def start() -> Response:
            self.world.blockers[key] = Blocker()
            response = await self.harness.post(
                tool_call(request_id, "block", key=key),
                session.token,
                session.session_id,
            )
            if response.status == 200:
                with anyio.fail_after(STEP_GUARD):
                    await self.world.blockers[key].started.wait()
            else:
                await response.read()
            return response

        response = self.run(start)
        if not self._addressable(session):
            assert response.status == 401
            return
        assert response.status == 200
        session.calls[key] = Call(key, request_id, response)

    @precondition(lambda self: bool(self._calls()))
    @rule(pick=picks)
    def release_call(self, pick: int) -> None:
        self._release(*self._pick(self._calls(), pick))

    def _release(self, session: Session, call: Call) -> None:
        async def release() -> list[dict[str, Any]]:
            self.world.blockers[call.key].release.set()
            if not call.connected:
                with anyio.fail_after(STEP_GUARD):
                    await call.response.app_done.wait()
                return []
            return await call.response.messages()

        messages = self.run(release)
        if call.connected:
            only_own_ids(messages, call.request_id)
            assert messages, call.response.body
            assert text_of(messages[-1]) == f"{session.server}:{call.key}", messages
        del session.calls[call.key]
        self._exchange_done(session)

    @precondition(lambda self: bool(self._calls()))
    @rule(pick=picks)
    def cancel_call(self, pick: int) -> None:
        """notifications/cancelled: the handler stops and the stream ends with the -32800 error."""
        session, call = self._pick(self._calls(), pick)
        message = notification("notifications/cancelled", {"requestId": call.request_id, "reason": "test"})

        async def cancel() -> tuple[int, list[dict[str, Any]]]:
            response = await self.harness.post(message, session.token, session.session_id)
            await response.read()
            if response.status != 202:
                return response.status, []
            if not call.connected:
                with anyio.fail_after(STEP_GUARD):
                    await call.response.app_done.wait()
                return 202, []
            return 202, await call.response.messages()

        status, messages = self.run(cancel)
        if not self._addressable(session):
            assert status == 401
            return
        assert status == 202
        if call.connected:
            only_own_ids(messages, call.request_id)
            assert messages, call.response.body
            assert messages[-1]["error"]["code"] == REQUEST_CANCELLED, messages
        del session.calls[call.key]
        self._exchange_done(session)

    @precondition(lambda self: any(c.connected for _, c in self._calls()))
    @rule(pick=picks)
    def disconnect_mid_call(self, pick: int) -> None:
        """The client leaves mid-stream: the legacy call is not cancelled and its session stays busy."""
        _session, call = self._pick([(s, c) for s, c in self._calls() if c.connected], pick)
        self.sync(call.response.disconnect)
        call.connected = False

    # -- GET streams ---------------------------------------------------------------------------------

    @precondition(lambda self: bool(self.live))
    @rule(pick=picks, foreign=st.booleans())
    def open_get(self, pick: int, foreign: bool) -> None:
        """A GET stream; with `foreign`, its Last-Event-ID names another session's stream (never replayed)."""
        session = self._pick(self._sessions(), pick)
        last_event_id = None
        if foreign:
            others = [eid for s in self.live.values() if s is not session for eid in s.finished_streams]
            last_event_id = others[pick % len(others)] if others else None

        async def open_() -> Response:
            response = await self.harness.get(session.token, session.session_id, last_event_id)
            if response.status != 200:
                await response.read()
            return response

        response = self.run(open_)
        if not self._addressable(session):
            assert response.status == 401
            return
        if session.get is not None:
            assert response.status == 409
            return
        assert response.status == 200
        session.get = response

    @precondition(lambda self: any(s.get is not None for s in self.live.values()))
    @rule(pick=picks)
    def drop_get(self, pick: int) -> None:
        self._drop_get(self._pick([s for s in self.live.values() if s.get is not None], pick))

    def _drop_get(self, session: Session) -> None:
        response = session.get
        assert response is not None

        async def drop() -> None:
            read_nowait(response)
            response.disconnect()
            await response.app_done.wait()

        self.run(drop)
        only_own_ids(buffered_messages(response), None)  # the standalone stream answers no request
        session.get = None
        self._exchange_done(session)

    @precondition(lambda self: any(not s.idle and s.token in self.registered for s in self.live.values()))
    @rule(pick=picks, removed=st.booleans())
    def drain_busy_session_then_finish(self, pick: int, removed: bool) -> None:
        """A busy session drains (token removed or updated) and keeps serving its exchanges; a removed
        token's session ends exactly when its last exchange does, an updated one's stays draining."""
        session = self._pick([s for s in self.live.values() if not s.idle and s.token in self.registered], pick)
        if removed:
            self.remove_token(session.token, "drain", LONG_DRAIN)
        else:
            self.update_token(session.token, "drain", LONG_DRAIN)
        assert session.session_id in self.live
        assert session.state is SessionState.DRAINING
        self.app_agrees_with_the_model()
        for call in list(session.calls.values()):
            assert session.session_id in self.live
            self._release(session, call)
        if session.get is not None:
            assert session.session_id in self.live
            self._drop_get(session)
        # (An updated session whose token was removed before, and re-added, still ends when idle.)
        assert (session.session_id in self.live) is not session.end_when_idle
        if session.end_when_idle:
            assert self.ended[session.session_id] == "token_removed"

    @precondition(lambda self: any(s.finished_streams for s in self.live.values()))
    @rule(pick=picks)
    def replay_finished_stream(self, pick: int) -> None:
        """GET with Last-Event-ID of a finished request stream: its own answer, then the response ends."""
        session = self._pick([s for s in self.live.values() if s.finished_streams], pick)
        event_id, request_id = self._pick(list(session.finished_streams.items()), pick)

        async def replay() -> tuple[int, list[dict[str, Any]]]:
            response = await self.harness.get(session.token, session.session_id, event_id)
            return response.status, (await response.messages() if response.status == 200 else [])

        status, messages = self.run(replay)
        if not self._addressable(session):
            assert status == 401
            return
        assert status == 200
        only_own_ids(messages, request_id)
        assert [m["id"] for m in messages] == [request_id], messages
        self._exchange_done(session)

    # -- ending sessions -----------------------------------------------------------------------------

    @precondition(lambda self: bool(self.live))
    @rule(pick=picks)
    def delete(self, pick: int) -> None:
        session = self._pick(self._sessions(), pick)

        async def delete() -> int:
            response = await self.harness.delete(session.token, session.session_id)
            await response.read()
            return response.status

        status = self.run(delete)
        if not self._addressable(session):
            assert status == 401
            return
        assert status == 200
        self._end(session, "deleted")

    @precondition(lambda self: bool(self.live))
    @rule(horizon=st.sampled_from((LONG_DRAIN * 5, IDLE_TIMEOUT * 5)))
    def expire(self, horizon: float) -> None:
        """Reap with a synthetic `now` in the future: past every drain deadline, or every idle one too."""

        async def reap() -> int:
            return int(self.harness.runtime.legacy.reap(anyio.current_time() + horizon))

        count = self.run(reap)
        expected = 0
        for session in self._sessions():
            if session.state is SessionState.DRAINING:
                self._end(session, "drain_timeout")
            elif session.idle and horizon >= IDLE_TIMEOUT:
                self._end(session, "idle_timeout")
            else:
                continue
            expected += 1
        assert count == expected

    # -- isolation -----------------------------------------------------------------------------------

    @precondition(lambda self: bool(self.live))
    @rule(pick=picks, other=tokens, method=st.sampled_from(("POST", "GET", "DELETE")))
    def foreign_token(self, pick: int, other: str, method: str) -> None:
        """A session is never reachable with another token: 404 (a registered token) or 401."""
        session = self._pick(self._sessions(), pick)
        if other == session.token:
            return
        request_id = self._request_id()

        async def probe() -> tuple[int, Any]:
            if method == "POST":
                response = await self.harness.post(request(request_id, "tools/list"), other, session.session_id)
            elif method == "GET":
                response = await self.harness.get(other, session.session_id)
            else:
                response = await self.harness.delete(other, session.session_id)
            body = await response.read()
            return response.status, json.loads(body) if body else None

        status, body = self.run(probe)
        if other in self.registered:
            assert status == 404, body
            if method == "POST":
                assert body["id"] == request_id
        else:
            assert status == 401

    @precondition(lambda self: bool(self.ended))
    @rule(pick=picks)
    def ended_session_is_gone(self, pick: int) -> None:
        session_id = self._pick(list(self.ended), pick)
        token = self.ended_tokens[session_id]
        echoed = self.run(self.harness.echo, token, session_id, self._request_id(), "late")
        assert echoed.status == (404 if token in self.registered else 401)

    # -- modern exchanges and bursts -----------------------------------------------------------------

    @rule(token=st.one_of(tokens, st.none()))
    def modern_echo(self, token: str | None) -> None:
        request_id = self._request_id()
        echoed = self.run(self.harness.modern_echo, token, request_id, "now")
        if token not in self.registered:
            assert echoed.status == 401
            return
        assert (echoed.status, echoed.text) == (200, f"{self.registered[token]}:now")
        self.built.add(token)

    @rule(
        ops=st.lists(
            st.tuples(st.sampled_from(("echo", "open", "modern")), picks, st.one_of(tokens, st.none())),
            min_size=2,
            max_size=6,
        )
    )
    def burst(self, ops: list[tuple[str, int, str | None]]) -> None:
        """Several requests at once, in one task group: each answer still reaches its own request."""
        sessions = self._sessions()
        planned: list[tuple[str, Any, int | str]] = []
        for kind, pick, token in ops:
            request_id = self._request_id()
            if kind == "echo" and sessions:
                planned.append(("echo", self._pick(sessions, pick), request_id))
            elif kind == "modern":
                planned.append(("modern", token, request_id))
            else:
                planned.append(("open", token, request_id))
        results: list[Any] = [None] * len(planned)

        async def go() -> None:
            async def one(index: int, kind: str, target: Any, request_id: int | str) -> None:
                if kind == "echo":
                    results[index] = await self.harness.echo(target.token, target.session_id, request_id, str(index))
                elif kind == "modern":
                    results[index] = await self.harness.modern_echo(target, request_id, str(index))
                else:
                    results[index] = await self.harness.open_session(target)

            async with anyio.create_task_group() as tg:
                for index, (kind, target, request_id) in enumerate(planned):
                    tg.start_soon(one, index, kind, target, request_id)

        self.run(go)
        for index, ((kind, target, _), result) in enumerate(zip(planned, results, strict=True)):
            if kind == "echo":
                if not self._addressable(target):
                    assert result.status == 401
                    continue
                assert (result.status, result.text) == (200, f"{target.server}:{index}")
                self._exchange_done(target)
            elif kind == "modern":
                if target not in self.registered:
                    assert result.status == 401
                    continue
                assert (result.status, result.text) == (200, f"{self.registered[target]}:{index}")
                self.built.add(target)
            elif target in self.registered:
                status, session_id = result
                assert status == 200
                assert session_id is not None
                self._open_model_session(target, session_id)
            else:
                assert result[0] == 401

    # -- invariants ----------------------------------------------------------------------------------

    @invariant()
    def app_agrees_with_the_model(self) -> None:
        async def check() -> None:
            await self._settle()
            self.harness.observe_sessions()
            self._check_orphans()
            self._check_table()
            self._check_stats()
            self._check_servers()
            self._check_events()
            self._check_open_streams()

        self.run(check)

    async def _settle(self) -> None:
        """Let every task run until all are blocked (event delivery, the reaper, ended streams)."""
        for response, _ in self.orphans:
            await response.app_done.wait()
        await anyio.wait_all_tasks_blocked()

    def _check_orphans(self) -> None:
        for response, request_id in self.orphans:
            read_nowait(response)
            assert response.app_done.is_set()
            if not response.gone:
                assert response.complete, response.body
            only_own_ids(buffered_messages(response), request_id)
        self.orphans.clear()

    def _check_table(self) -> None:
        table = self.harness.runtime.table
        entries = {entry.session_id: entry for entry in table}
        assert set(entries) == set(self.live), (sorted(entries), sorted(self.live))
        for session_id, entry in entries.items():
            session = self.live[session_id]
            assert entry.owner == OWNERS[session.token]
            assert entry.tenant_id == session.tenant
            assert entry.state is session.state
            # Every live session belongs to a registered tenant, or is draining.
            assert entry.state is SessionState.DRAINING or session.token in self.registered
            assert entry.in_flight == session.in_flight, (entry.in_flight, session)
            assert entry.end_when_idle is session.end_when_idle
            for token, owner in OWNERS.items():
                found = table.lookup(session_id, owner)
                assert (found is entry) if token == session.token else (found is None)

    def _check_stats(self) -> None:
        stats = self.harness.app.stats()
        assert stats["running"] is True
        assert stats["registered_tokens"] == len(self.registered)
        assert stats["built_servers"] == len(self.built)
        assert stats["active_sessions"] == len(self.live)
        assert stats["sessions_per_tenant"] == dict(Counter(s.tenant for s in self.live.values()))
        open_streams = sum(len(s.calls) + (s.get is not None) for s in self.live.values())
        assert stats["open_streams"] == open_streams

    def _check_servers(self) -> None:
        expected = {self.registered[token] for token in self.built} | {s.server for s in self.live.values()}
        assert dict(self.world.running) == dict.fromkeys(expected, 1)

    def _check_events(self) -> None:
        assert Counter(self.harness.created) == Counter(self.created)
        assert len({sid for sid, _ in self.harness.ended}) == len(self.harness.ended), self.harness.ended
        assert dict(self.harness.ended) == self.ended

    def _check_open_streams(self) -> None:
        for session in self.live.values():
            if session.get is not None:
                read_nowait(session.get)
                assert not session.get.complete
                only_own_ids(buffered_messages(session.get), None)
            for call in session.calls.values():
                if call.connected:
                    read_nowait(call.response)
                    assert not call.response.complete
                    only_own_ids(buffered_messages(call.response), call.request_id)

    # -- teardown --------------------------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            harness = self.harness
            self.sync(harness.stop)
            self.main_future.result(timeout=SHUTDOWN_TIMEOUT + STEP_GUARD)

            def after_exit() -> None:
                assert not harness.shutdown_deadline_hit, "shutdown had to cancel tasks at its deadline"
                assert harness.unfinished_after_exit == []
                assert self.world.running == Counter(), self.world.running
                assert self.world.entered == self.world.exited
                assert harness.app.stats()["active_sessions"] == 0
                assert harness.runtime.legacy.open_streams == 0
                assert len(harness.runtime.table) == 0
                for session in harness.sessions_seen.values():
                    assert session.closed
                    assert not session.dispatcher.running
                # Shutdown ended every session still live, once each.
                ended = dict(harness.ended)
                assert len(ended) == len(harness.ended)
                assert set(ended) == set(harness.created)
                assert {sid for sid, reason in ended.items() if reason == "shutdown"} == set(self.live)

            self.sync(after_exit)
        finally:
            self._portal_cm.__exit__(None, None, None)


def machine_for(backend: str) -> type[AppMachine]:
    machine = type(f"AppMachine_{backend}", (AppMachine,), {"backend": backend})
    if (pinned := os.environ.get("ASGI_MCP_STATEFUL_SEED")) is not None:
        machine = seed(int(pinned))(machine)
    if (blob := os.environ.get("ASGI_MCP_STATEFUL_REPRODUCE")) is not None:
        version, encoded = blob.split()
        machine = reproduce_failure(version, encoded.encode())(machine)
    return machine


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_app_against_model(backend: str, record_property: Callable[[str, object], None]) -> None:
    before_examples, before_steps = EXAMPLES[backend], STEPS[backend]
    run_state_machine_as_test(machine_for(backend), settings=settings.get_profile(PROFILE))
    examples, steps = EXAMPLES[backend] - before_examples, STEPS[backend] - before_steps
    record_property("examples", examples)
    record_property("portal_calls", steps)
    print(f"\n{backend}: {examples} examples, {steps} async steps (profile {PROFILE})")
    assert examples > 0
