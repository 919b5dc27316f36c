"""Soak: many concurrent clients of mixed traffic, both eras, while tokens churn; real servers.

uvicorn serves on the asyncio backend, hypercorn's Trio worker on the trio backend, both in-process
on 127.0.0.1. Two apps share one token registry behind a tiny router: `/mcp` answers legacy requests
with SSE, `/json/mcp` with JSON. 32 clients run bounded request loops of five kinds (legacy SSE
sessions, legacy JSON sessions, sessions holding a GET stream, modern exchanges, sessions left to
expire) while a churner adds, removes and updates tokens with both session policies.

Asserted: no unexpected answer (401 and 404, or a request whose session ended under it, are expected
only when that client's token was removed or updated since it started its flow, and the churner
records every such change before making it); the server each request reached is its token's (no
cross-tenant answer); resident memory grows less than a generous bound; and every session and stream
is reclaimed at the end (DELETE, or idle expiry after a short timeout).

The default run is short (10 s per server) and runs with the suite. The long one:

    ASGI_MCP_SOAK_SECONDS=300 pytest -m soak -s

(`-s` shows the figures: requests, req/s, sessions, churn operations, RSS before and after.)
`ASGI_MCP_SOAK_CLIENTS` changes the number of clients, `ASGI_MCP_SOAK_RSS_MIB` the memory bound.
"""

from __future__ import annotations

import gc
import json
import os
import random
import resource
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final, NoReturn

import anyio
import httpx
import pytest

from asgi_mcp import McpApp, Tenants
from asgi_mcp._io.loop import Loop
from asgi_mcp._kernel.hosting import ServerHost
from asgi_mcp._legacy.session import LegacySession
from asgi_mcp._legacy.streams import STREAM_BUFFER
from tests.kit.mcp_servers import tenant_server
from tests.kit.messages import LEGACY, initialize, modern, notification, request
from tests.kit.polling import wait_until
from tests.kit.real_servers import serve_http

pytestmark = [pytest.mark.anyio, pytest.mark.soak, pytest.mark.integration]

SECONDS: Final = float(os.environ.get("ASGI_MCP_SOAK_SECONDS", "10"))
CLIENTS: Final = int(os.environ.get("ASGI_MCP_SOAK_CLIENTS", "32"))
RSS_BOUND_MIB: Final = float(os.environ.get("ASGI_MCP_SOAK_RSS_MIB", "50"))
SLOTS: Final = 6  # tenants alive at any time; each slot's token is replaced as it churns
IDLE_TIMEOUT: Final = 3.0  # abandoned sessions expire after this; busy clients never idle that long
DRAIN_TIMEOUT: Final = 1.0
CHURN_EVERY: Final = 40  # one registry change per this many finished flows
MAX_FLOWS_PER_CLIENT: Final = 1_000_000  # a bound on every loop, whatever the clock does
MAX_ABANDONED: Final = 300  # live abandoned sessions at most (the rest are deleted)
KINDS: Final = ("legacy-sse", "legacy-json", "get-stream", "modern", "abandon")
SERVER: Final = {"asyncio": "uvicorn", "trio": "hypercorn-trio"}


def rss_mib() -> float:
    """Current resident set size (Linux `/proc/self/statm`; peak RSS from getrusage elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Router:
    """`/json/...` to the JSON app, the rest to the SSE app; runs both apps' lifespans."""

    def __init__(self, sse: McpApp, json_app: McpApp) -> None:
        self.sse = sse
        self.json = json_app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()  # lifespan.startup
            async with AsyncExitStack() as stack:
                await stack.enter_async_context(self.sse.lifespan_context())
                await stack.enter_async_context(self.json.lifespan_context())
                await send({"type": "lifespan.startup.complete"})
                await receive()  # lifespan.shutdown
            await send({"type": "lifespan.shutdown.complete"})
            return
        app = self.json if scope["path"].startswith("/json/") else self.sse
        await app(scope, receive, send)


@dataclass
class Slot:
    """A tenant position: its current token, and `epoch`, bumped before every change to it."""

    index: int
    token: str
    epoch: int = 0
    generation: int = 0


class Abort(Exception):
    """Ends a flow early (the verdict is already recorded)."""


@dataclass
class Soak:
    base: str
    sse_app: McpApp
    json_app: McpApp
    tenants: Tenants
    rng: random.Random
    slots: list[Slot] = field(default_factory=lambda: list[Slot]())
    requests: int = 0
    flows: int = 0
    flows_by_kind: Counter[str] = field(default_factory=lambda: Counter[str]())
    expected: Counter[str] = field(default_factory=lambda: Counter[str]())
    unexpected: list[str] = field(default_factory=lambda: list[str]())
    churn_ops: Counter[str] = field(default_factory=lambda: Counter[str]())
    churn_due: anyio.Event = field(default_factory=anyio.Event)
    stopping: bool = False

    # -- the registry -------------------------------------------------------------------------

    def factory(self, slot: Slot) -> Any:
        name = f"slot{slot.index}-g{slot.generation}"
        return lambda: tenant_server(name)

    def add_slots(self) -> None:
        for index in range(SLOTS):
            slot = Slot(index, self.new_token(index))
            self.slots.append(slot)
            self.tenants.add(slot.token, self.factory(slot))

    def new_token(self, index: int) -> str:
        return f"soak-{index}-{secrets.token_urlsafe(12)}"

    def churn_once(self) -> None:
        slot = self.rng.choice(self.slots)
        op = self.rng.choice(("update-drain", "update-close", "remove-drain", "remove-close"))
        policy = op.split("-")[1]
        # The epoch moves first: a client that sees the change sees the new epoch too.
        slot.epoch += 1
        slot.generation += 1
        if op.startswith("update"):
            assert self.tenants.update(slot.token, self.factory(slot), policy=policy, drain_timeout=DRAIN_TIMEOUT)  # type: ignore[arg-type]
        else:
            assert self.tenants.remove(slot.token, policy=policy, drain_timeout=DRAIN_TIMEOUT)  # type: ignore[arg-type]
            slot.token = self.new_token(slot.index)
            self.tenants.add(slot.token, self.factory(slot))
        self.churn_ops[op] += 1

    async def churn(self) -> None:
        while not self.stopping:
            await self.churn_due.wait()
            self.churn_due = anyio.Event()
            if not self.stopping:
                self.churn_once()

    def flow_done(self, kind: str) -> None:
        self.flows += 1
        self.flows_by_kind[kind] += 1
        if self.flows % CHURN_EVERY == 0:
            self.churn_due.set()

    # -- verdicts -----------------------------------------------------------------------------

    def refused(self, slot: Slot, epoch: int, what: str, detail: str) -> NoReturn:
        """A request was refused or its session ended under it: fine only if the token changed."""
        if slot.epoch != epoch:
            self.expected[what] += 1
        else:
            self.unexpected.append(f"{what} (token unchanged): {detail}")
        raise Abort

    def wrong(self, detail: str) -> NoReturn:
        self.unexpected.append(detail)
        raise Abort

    def expect(self, response: httpx.Response, status: int, slot: Slot, epoch: int, what: str) -> None:
        if response.status_code == status:
            return
        if response.status_code in (401, 404):
            self.refused(slot, epoch, f"{response.status_code}", f"{what}: {response.text[:200]}")
        self.wrong(f"{what}: {response.status_code} {response.text[:300]}")

    def answer(self, response: httpx.Response, slot: Slot, epoch: int, what: str) -> dict[str, Any]:
        """The JSON-RPC result of a 200 answer (JSON, or the last SSE message)."""
        self.expect(response, 200, slot, epoch, what)
        if response.headers.get("content-type", "").startswith("application/json"):
            messages = [response.json()]
        else:
            lines = response.text.splitlines()
            messages = [json.loads(line[5:]) for line in lines if line.startswith("data:") and line[5:].strip()]
        if not messages or "result" not in messages[-1]:
            # An SSE stream that ended without its answer, or "Session closed" (-32000).
            self.refused(slot, epoch, "session ended", f"{what}: {response.text[:300]}")
        result: dict[str, Any] = messages[-1]["result"]
        return result

    def check_whoami(self, result: dict[str, Any], slot: Slot) -> None:
        text = result["content"][0]["text"]
        if not text.startswith(f"slot{slot.index}-g"):
            self.wrong(f"cross-tenant answer: slot {slot.index} got {text!r}")

    # -- HTTP ---------------------------------------------------------------------------------

    def headers(self, token: str, session: str | None = None, **extra: str) -> dict[str, str]:
        headers = {
            "accept": "application/json, text/event-stream",
            "content-type": "application/json",
            "mcp-protocol-version": LEGACY,
            "authorization": f"Bearer {token}",
        }
        if session is not None:
            headers["mcp-session-id"] = session
        headers.update(extra)
        return headers

    async def post(self, client: httpx.AsyncClient, url: str, message: Any, headers: dict[str, str]) -> httpx.Response:
        self.requests += 1
        return await client.post(url, content=json.dumps(message), headers=headers)

    async def open(self, client: httpx.AsyncClient, url: str, slot: Slot, epoch: int, token: str) -> str:
        response = await self.post(client, url, initialize(0), self.headers(token))
        self.answer(response, slot, epoch, "initialize")
        session_id = response.headers.get("mcp-session-id")
        if session_id is None:
            self.wrong("initialize answered without Mcp-Session-Id")
        acked = await self.post(client, url, notification("notifications/initialized"), self.headers(token, session_id))
        self.expect(acked, 202, slot, epoch, "initialized")
        return session_id

    async def delete(
        self, client: httpx.AsyncClient, url: str, slot: Slot, epoch: int, token: str, session: str
    ) -> None:
        self.requests += 1
        response = await client.delete(url, headers=self.headers(token, session))
        self.expect(response, 200, slot, epoch, "DELETE")

    # -- flows --------------------------------------------------------------------------------

    async def legacy(self, client: httpx.AsyncClient, slot: Slot, *, json_mode: bool, abandon: bool = False) -> None:
        url = f"{self.base}/json/mcp" if json_mode else f"{self.base}/mcp"
        token, epoch = slot.token, slot.epoch
        session = await self.open(client, url, slot, epoch, token)
        for i in range(3):
            response = await self.post(
                client, url, request(i + 1, "tools/call", {"name": "whoami"}), self.headers(token, session)
            )
            self.check_whoami(self.answer(response, slot, epoch, "whoami"), slot)
        response = await self.post(client, url, request(9, "tools/list"), self.headers(token, session))
        self.answer(response, slot, epoch, "tools/list")
        if abandon and self.sse_app.stats()["active_sessions"] < MAX_ABANDONED:
            return  # left for the idle reaper
        await self.delete(client, url, slot, epoch, token, session)

    async def get_stream(self, client: httpx.AsyncClient, slot: Slot) -> None:
        url = f"{self.base}/mcp"
        token, epoch = slot.token, slot.epoch
        session = await self.open(client, url, slot, epoch, token)
        self.requests += 1
        headers = self.headers(token, session, accept="text/event-stream")
        async with client.stream("GET", url, headers=headers) as stream:
            if stream.status_code != 200:
                await stream.aread()
            self.expect(stream, 200, slot, epoch, "GET stream")
            for i in range(2):
                response = await self.post(
                    client, url, request(i + 1, "tools/call", {"name": "whoami"}), self.headers(token, session)
                )
                self.check_whoami(self.answer(response, slot, epoch, "whoami beside GET"), slot)
        # Leaving the block closed the GET connection: the server must notice and free the stream.
        await self.delete(client, url, slot, epoch, token, session)

    async def modern(self, client: httpx.AsyncClient, slot: Slot) -> None:
        url = f"{self.base}/mcp"
        token, epoch = slot.token, slot.epoch
        for request_id, method, params in (
            (1, "tools/call", {"name": "whoami", "arguments": {}}),
            (2, "tools/list", None),
        ):
            body, routing = modern(request_id, method, params)
            headers = {**self.headers(token), **routing}
            result = self.answer(await self.post(client, url, body, headers), slot, epoch, f"modern {method}")
            if method == "tools/call":
                self.check_whoami(result, slot)

    async def client(self, index: int, deadline: float) -> None:
        kind = KINDS[index % len(KINDS)]
        async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
            for flow in range(MAX_FLOWS_PER_CLIENT):
                if self.stopping or anyio.current_time() >= deadline:
                    return
                slot = self.slots[(index + flow) % SLOTS]
                try:
                    if kind == "legacy-sse":
                        await self.legacy(client, slot, json_mode=False)
                    elif kind == "legacy-json":
                        await self.legacy(client, slot, json_mode=True)
                    elif kind == "get-stream":
                        await self.get_stream(client, slot)
                    elif kind == "modern":
                        await self.modern(client, slot)
                    else:
                        await self.legacy(client, slot, json_mode=False, abandon=True)
                except Abort:
                    pass
                except httpx.HTTPError as exc:
                    self.unexpected.append(f"{kind}: transport error {type(exc).__name__}: {exc}")
                self.flow_done(kind)


@asynccontextmanager
async def soak_server(backend: str) -> AsyncIterator[Soak]:
    tenants = Tenants()
    options: dict[str, Any] = {"session_idle_timeout": IDLE_TIMEOUT, "shutdown_timeout": 2.0}
    sse_app = McpApp(tenants=tenants, **options)
    json_app = McpApp(tenants=tenants, path="/json/mcp", json_response=True, **options)
    async with serve_http(Router(sse_app, json_app), backend) as base:  # type: ignore[arg-type]
        soak = Soak(base, sse_app, json_app, tenants, random.Random(20260728))
        soak.add_slots()
        yield soak


async def test_soak(anyio_backend: str) -> None:
    server = SERVER[anyio_backend]
    with anyio.fail_after(SECONDS + 120):
        async with soak_server(anyio_backend) as soak:
            # Counted, not kept: a long run would otherwise hold every event it saw.
            lifecycle: Counter[str] = Counter()

            def count(event: Any) -> None:
                lifecycle[event.name] += 1

            for app in (soak.sse_app, soak.json_app):
                app.on("session_created", count)
                app.on("session_ended", count)

            # Warm-up: every flow kind once per slot (servers built, code paths and caches warm).
            async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
                for slot in soak.slots:
                    await soak.legacy(client, slot, json_mode=False)
                    await soak.legacy(client, slot, json_mode=True)
                    await soak.get_stream(client, slot)
                    await soak.modern(client, slot)
            assert not soak.unexpected, soak.unexpected
            gc.collect()
            rss_before = rss_mib()
            requests_before = soak.requests

            started = time.perf_counter()
            deadline = anyio.current_time() + SECONDS
            async with anyio.create_task_group() as tg:
                tg.start_soon(soak.churn)
                async with anyio.create_task_group() as clients:
                    for index in range(CLIENTS):
                        clients.start_soon(soak.client, index, deadline)
                soak.stopping = True
                soak.churn_due.set()
            elapsed = time.perf_counter() - started
            requests = soak.requests - requests_before

            # Every session ends: deleted by its client, or expired (abandoned, drained).
            def reclaimed() -> bool:
                return all(
                    app.stats()["active_sessions"] == 0 and app.stats()["open_streams"] == 0
                    for app in (soak.sse_app, soak.json_app)
                )

            await wait_until(reclaimed, timeout=IDLE_TIMEOUT + DRAIN_TIMEOUT + 15)
            await wait_until(lambda: lifecycle["session_ended"] == lifecycle["session_created"], timeout=10)
            gc.collect()
            rss_after = rss_mib()

            print(
                f"\n[soak {server}] {SECONDS:.0f} s, {CLIENTS} clients: {requests} requests in {elapsed:.1f} s "
                f"({requests / elapsed:.0f} req/s), {soak.flows} flows {dict(soak.flows_by_kind)}, "
                f"{lifecycle['session_created']} sessions, "
                f"churn {sum(soak.churn_ops.values())} ops {dict(soak.churn_ops)}, "
                f"expected refusals {dict(soak.expected)}, unexpected {len(soak.unexpected)}; "
                f"RSS {rss_before:.1f} -> {rss_after:.1f} MiB ({rss_after - rss_before:+.1f}), "
                f"peak {peak_rss_mib():.1f} MiB"
            )
            assert not soak.unexpected, "\n".join(soak.unexpected[:20])
            assert soak.flows > CLIENTS, "the clients hardly ran"
            assert sum(soak.churn_ops.values()) > 0, "no token churned"
            assert rss_after - rss_before < RSS_BOUND_MIB, (rss_before, rss_after)
            for app in (soak.sse_app, soak.json_app):
                stats = app.stats()
                assert stats["active_sessions"] == 0, stats
                assert stats["open_streams"] == 0, stats
                assert stats["sessions_per_tenant"] == {}, stats


async def test_final_frame_interrupted_by_session_close_still_ends_the_connection() -> None:
    """Found by the soak: a session closing while its handler's final frame waits to be delivered
    (the memory-stream send is a checkpoint) left that request's connection attached, and the POST
    hung until the client gave up. The stream must be detached whatever the order."""
    async with anyio.create_task_group() as app_tasks:
        session = LegacySession(
            "s", ServerHost(tenant_server("s")), app_tasks, Loop.current(), events=None, retry_ms=None, observer=None
        )
        stream = session.outbound.new_stream(json_only=False)
        attached = stream.attach()
        assert attached is not None
        _, frames = attached
        for _ in range(STREAM_BUFFER):  # a client that reads nothing: the buffer is full
            await session.outbound.emit(stream, notification("notifications/message"))
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    partial(session.outbound.emit, stream, {"jsonrpc": "2.0", "id": 1, "result": {}}, final=True)
                )
                await anyio.wait_all_tasks_blocked()  # the final frame waits for buffer space
                session.close()  # the session ends (token removed, DELETE, expiry) ...
                tg.cancel_scope.cancel()  # ... and the handler's task is cancelled
            received = [frame async for frame in frames]  # ends: the connection's stream was detached
        assert len(received) == STREAM_BUFFER
