"""Per-bearer-token servers: routing, isolation, single-flight builds, remove/update with live
sessions under both policies, in memory and over real HTTP, on asyncio and Trio."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest

from asgi_mcp import McpApp, Tenants
from tests.kit.http import HttpSession, answer_of
from tests.kit.mcp_servers import TOKEN_A, TOKEN_B, UNKNOWN_TOKEN, Lifespans, Probe, factory_of, tenant_server
from tests.kit.memory import Response, TokenClient, final_message, serving
from tests.kit.messages import call_tool, challenge_params, initialize, request
from tests.kit.polling import Recorder, wait_until
from tests.kit.real_servers import serve_http

pytestmark = pytest.mark.anyio

GUARD = 10.0  # seconds any one test may take before it counts as hung


def two_tenants(**options: Any) -> McpApp:
    tenants = Tenants()
    tenants.add(TOKEN_A, factory_of("alpha"), label="alpha")
    tenants.add(TOKEN_B, factory_of("bravo"), label="bravo")
    return McpApp(tenants=tenants, **options)


def text(answer: dict[str, Any]) -> str:
    assert "result" in answer, answer
    return str(answer["result"]["content"][0]["text"])


@dataclass
class GatedTenant:
    """Token A's tenant "alpha" on a running app (in memory): its `block` tool waits on `gate`, its
    server's lifespans are counted in `lifespans`, its events recorded."""

    tenants: Tenants
    tenant_id: str
    app: McpApp
    recorder: Recorder
    client: TokenClient
    gate: Probe
    lifespans: Lifespans

    async def block(self, session_id: str) -> Response:
        """A `block` call on the session, once its handler runs: the session is busy until `gate` is released."""
        in_flight = await self.client.post(call_tool(4, "block"), session_id=session_id)
        await self.gate.started.wait()
        return in_flight


@asynccontextmanager
async def gated_tenant(*, with_bravo: bool = False) -> AsyncIterator[GatedTenant]:
    gate, lifespans = Probe(), Lifespans()
    tenants = Tenants()
    tenant_id = tenants.add(TOKEN_A, lambda: tenant_server("alpha", gate=gate, lifespans=lifespans))
    if with_bravo:
        tenants.add(TOKEN_B, factory_of("bravo"))
    app = McpApp(tenants=tenants)
    recorder = Recorder(app)
    async with serving(app) as client:
        yield GatedTenant(tenants, tenant_id, app, recorder, TokenClient(client, TOKEN_A), gate, lifespans)


# -- routing and isolation ------------------------------------------------------------------------


async def test_two_tokens_see_different_tools() -> None:
    app = two_tenants()
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            a, b = TokenClient(client, TOKEN_A), TokenClient(client, TOKEN_B)
            sa, sb = await a.open_session(), await b.open_session()
            assert {"alpha_only", "whoami"} <= await a.tool_names(sa)
            assert "bravo_only" not in await a.tool_names(sa)
            assert {"bravo_only", "whoami"} <= await b.tool_names(sb)
            assert "alpha_only" not in await b.tool_names(sb)
            assert text(await a.call(sa, call_tool(2, "whoami"))) == "alpha"
            assert text(await b.call(sb, call_tool(2, "whoami"))) == "bravo"
            # B's server does not know A's tool.
            answer = await b.call(sb, call_tool(3, "alpha_only"))
            assert "error" in answer or answer["result"].get("isError") is True
            stats = app.stats()
            assert stats["registered_tokens"] == 2
            assert stats["built_servers"] == 2
            assert stats["sessions_per_tenant"] == {"alpha": 1, "bravo": 1}


async def test_concurrent_sessions_of_one_token_all_work() -> None:
    """The seed shared one server between a token's sessions; a second session broke the first."""
    gate = Probe()
    app = McpApp(tenants=Tenants({TOKEN_A: lambda: tenant_server("alpha", gate=gate)}))
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            a = TokenClient(client, TOKEN_A)
            first = await a.open_session()
            blocked = await a.post(call_tool(9, "block"), session_id=first)
            await gate.started.wait()
            sessions: list[str] = []
            answers: dict[str, str] = {}

            async def one() -> None:
                session_id = await a.open_session()
                sessions.append(session_id)
                answers[session_id] = text(await a.call(session_id, call_tool(1, "alpha_only")))
                assert "alpha_only" in await a.tool_names(session_id)

            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    tg.start_soon(one)
            assert len(set(sessions)) == 5
            assert first not in sessions
            assert set(answers.values()) == {"alpha"}
            # The first session's in-flight call was not disturbed by the others, and it still works.
            gate.release.set()
            assert text((await blocked.messages())[-1]) == "released by alpha"
            assert text(await a.call(first, call_tool(3, "whoami"))) == "alpha"
            assert app.stats()["sessions_per_tenant"] == {next(iter(app.config.tenants.ids())): 6}  # type: ignore[union-attr]


async def test_concurrent_first_initialize_runs_the_factory_once() -> None:
    calls = 0
    release = anyio.Event()
    lifespans = Lifespans()

    async def factory() -> Any:
        nonlocal calls
        calls += 1
        await release.wait()
        return tenant_server("alpha", lifespans=lifespans)

    tenants = Tenants({TOKEN_A: factory})
    app = McpApp(tenants=tenants)
    recorder = Recorder(app)
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            a = TokenClient(client, TOKEN_A)
            sessions: list[str] = []

            async def one() -> None:
                sessions.append(await a.open_session())

            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(one)
                await wait_until(lambda: calls >= 1)
                await anyio.wait_all_tasks_blocked()
                assert calls == 1  # every initialize now waits for the one build
                release.set()
            assert calls == 1
            assert len(set(sessions)) == 4
            assert lifespans.entered == 1
            assert lifespans.exited == 0
            await recorder.wait_for("server_registered")
            assert tenants.remove(TOKEN_A)
            await wait_until(lambda: lifespans.exited == 1)
            assert lifespans.entered == 1
            ended = await recorder.wait_for("session_ended", 4)
            assert {e.session_id for e in ended} == set(sessions)
            assert len(recorder.of("server_registered")) == 1


async def test_remove_while_the_factory_runs_never_serves_the_removed_token() -> None:
    calls = 0
    started, release = anyio.Event(), anyio.Event()
    lifespans = Lifespans()

    async def factory() -> Any:
        nonlocal calls
        calls += 1
        started.set()
        await release.wait()
        return tenant_server("alpha", lifespans=lifespans)

    tenants = Tenants({TOKEN_A: factory})
    app = McpApp(tenants=tenants)
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            a = TokenClient(client, TOKEN_A)
            statuses: list[int] = []

            async def initialize_once() -> None:
                response = await a.post(initialize(0))
                statuses.append(response.status)
                await response.read()

            async with anyio.create_task_group() as tg:
                tg.start_soon(initialize_once)
                await started.wait()
                assert tenants.remove(TOKEN_A)
                release.set()
            assert calls == 1
            assert statuses[0] in (401, 404), statuses
            assert len(app.stats()["sessions_per_tenant"]) == 0
            await wait_until(lambda: lifespans.exited == lifespans.entered)
            assert app.stats()["built_servers"] == 0


async def test_session_of_another_token_is_not_found() -> None:
    app = two_tenants()
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            a, b = TokenClient(client, TOKEN_A), TokenClient(client, TOKEN_B)
            sa = await a.open_session()
            await b.open_session()
            stolen = await b.post(request(7, "tools/list"), session_id=sa)
            assert stolen.status == 404
            body = await stolen.json()
            assert body["id"] == 7
            assert body["error"]["code"] == -32600
            assert (await b.get(sa)).status == 404
            assert (await b.delete(sa)).status == 404
            # None of that touched A's session.
            assert "alpha_only" in await a.tool_names(sa)
            assert (await a.delete(sa)).status == 200


async def test_unknown_missing_and_removed_tokens_get_401() -> None:
    app = two_tenants(authorization_servers=["https://auth.example.com"], required_scopes=["mcp:tools"])
    tenants = app.config.tenants
    assert isinstance(tenants, Tenants)
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            unknown = await TokenClient(client, UNKNOWN_TOKEN).post(initialize(0))
            assert unknown.status == 401
            params = challenge_params(unknown.header("www-authenticate") or "")
            assert params["error"] == "invalid_token"
            assert params["scope"] == "mcp:tools"
            assert params["resource_metadata"] == "http://127.0.0.1:8000/.well-known/oauth-protected-resource/mcp"
            assert (await unknown.json())["error"] == "invalid_token"

            anonymous = await TokenClient(client, None).post(initialize(0))
            assert anonymous.status == 401
            assert "error" not in challenge_params(anonymous.header("www-authenticate") or "")

            a = TokenClient(client, TOKEN_A)
            session_id = await a.open_session()
            assert tenants.remove(TOKEN_A)
            assert not tenants.remove(TOKEN_A)  # a second remove reports it was not registered
            for response in (
                await a.post(initialize(0)),
                await a.post(request(1, "tools/list"), session_id=session_id),
                await a.get(session_id),
                await a.delete(session_id),
            ):
                assert response.status == 401
                assert challenge_params(response.header("www-authenticate") or "")["error"] == "invalid_token"
            # B is unaffected.
            b = TokenClient(client, TOKEN_B)
            assert "bravo_only" in await b.tool_names(await b.open_session())


@pytest.mark.parametrize("kind", ["raises", "async_raises", "not_a_server"])
async def test_failing_factory_gets_a_generic_500(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    secret = "factory-secret-detail-42"

    def raises() -> Any:
        raise RuntimeError(secret)

    async def async_raises() -> Any:
        raise RuntimeError(secret)

    def not_a_server() -> Any:
        return secret

    factory = {"raises": raises, "async_raises": async_raises, "not_a_server": not_a_server}[kind]
    tenants = Tenants()
    tenant_id = tenants.add(TOKEN_A, factory)
    app = McpApp(tenants=tenants)
    caplog.set_level(logging.DEBUG)
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            a = TokenClient(client, TOKEN_A)
            response = await a.post(initialize(5))
            assert response.status == 500
            raw = await response.read()
            assert secret.encode() not in raw
            assert b"RuntimeError" not in raw
            assert b"Traceback" not in raw
            assert (await response.json())["error"]["code"] == -32603
            # The failure is logged once, naming the tenant by id and never by token (besides the
            # request's own refusal line, which names the tenant too).
            named = [r for r in caplog.records if getattr(r, "tenant_id", None) == tenant_id]
            failures = [r for r in named if r.name == "asgi_mcp.tenancy"]
            assert len(failures) == 1
            assert failures[0].levelno == logging.ERROR
            assert [(r.name, r.levelno) for r in named if r not in failures] == [("asgi_mcp.http", logging.INFO)]
            for record in caplog.records:
                assert TOKEN_A not in caplog.text
                assert TOKEN_A not in record.getMessage()
            # A later request tries again: a fixed factory serves.
            assert tenants.update(TOKEN_A, factory_of("alpha"))
            assert "alpha_only" in await a.tool_names(await a.open_session())


# -- remove / update with live sessions -----------------------------------------------------------


async def test_remove_with_close_ends_sessions_and_streams_now() -> None:
    with anyio.fail_after(GUARD):
        async with gated_tenant(with_bravo=True) as alpha:
            a = alpha.client
            s1, s2 = await a.open_session(), await a.open_session()
            stream = await a.get(s1)
            assert stream.status == 200
            in_flight = await alpha.block(s2)
            b = TokenClient(a.client, TOKEN_B)
            sb = await b.open_session()

            assert alpha.tenants.remove(TOKEN_A, policy="close")
            # Both open streams end now (the GET stream and the in-flight tool call's stream).
            await stream.read()
            await in_flight.read()
            await alpha.gate.cancelled.wait()
            ended = await alpha.recorder.wait_for("session_ended", 2, tenant_id=alpha.tenant_id)
            assert {e.session_id for e in ended} == {s1, s2}
            assert {e.reason for e in ended} == {"token_removed"}
            assert all(e.server_name == "alpha" and e.duration >= 0 for e in ended)
            [removed] = await alpha.recorder.wait_for("server_removed")
            assert removed.tenant_id == alpha.tenant_id
            assert removed.had_active_sessions
            assert removed.active_sessions == 2
            assert (await a.post(request(1, "ping"), session_id=s1)).status == 401
            await wait_until(lambda: alpha.lifespans.exited == 1)
            assert alpha.app.stats()["sessions_per_tenant"] == {"tok-" + _digest_prefix(TOKEN_B): 1}
            assert "bravo_only" in await b.tool_names(sb)


def _digest_prefix(token: str) -> str:
    import hashlib

    return hashlib.sha256(token.encode()).hexdigest()[:12]


async def test_remove_without_sessions_reports_no_active_sessions() -> None:
    tenants = Tenants()
    tenant_id = tenants.add(TOKEN_A, factory_of("alpha"))
    app = McpApp(tenants=tenants)
    recorder = Recorder(app)
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            a = TokenClient(client, TOKEN_A)
            session_id = await a.open_session()
            assert (await a.delete(session_id)).status == 200
            assert tenants.remove(TOKEN_A)
            [removed] = await recorder.wait_for("server_removed")
            assert removed.tenant_id == tenant_id
            assert removed.had_active_sessions is False
            assert removed.active_sessions == 0


async def test_update_with_close_ends_old_sessions_and_new_ones_get_the_new_factory() -> None:
    new_lifespans = Lifespans()
    with anyio.fail_after(GUARD):
        async with gated_tenant() as alpha:
            a = alpha.client
            s1 = await a.open_session()
            stream = await a.get(s1)
            in_flight = await alpha.block(s1)

            renewed = lambda: tenant_server("alpha2", lifespans=new_lifespans)  # noqa: E731
            assert alpha.tenants.update(TOKEN_A, renewed, policy="close")
            await stream.read()
            await in_flight.read()
            [ended] = await alpha.recorder.wait_for("session_ended", tenant_id=alpha.tenant_id)
            assert ended.session_id == s1
            assert ended.reason == "token_updated"
            # The same token is still valid, but its closed session is gone.
            assert (await a.post(request(1, "tools/list"), session_id=s1)).status == 404
            await wait_until(lambda: alpha.lifespans.exited == 1)
            s2 = await a.open_session()
            tools = await a.tool_names(s2)
            assert "alpha2_only" in tools
            assert "alpha_only" not in tools
            [updated] = await alpha.recorder.wait_for("server_updated")
            assert (updated.tenant_id, updated.old_server_name, updated.new_server_name) == (
                alpha.tenant_id,
                "alpha",
                "alpha2",
            )
            assert new_lifespans.entered == 1


async def test_update_with_drain_keeps_old_sessions_on_the_old_server() -> None:
    with anyio.fail_after(GUARD):
        async with gated_tenant() as alpha:
            a = alpha.client
            busy, idle = await a.open_session(), await a.open_session()
            in_flight = await alpha.block(busy)

            assert alpha.tenants.update(TOKEN_A, factory_of("alpha2"), policy="drain", drain_timeout=60)
            # Old sessions keep working on the old server, with the same token.
            assert "alpha_only" in await a.tool_names(idle)
            assert text(await a.call(busy, call_tool(5, "whoami"))) == "alpha"
            # New sessions get the new factory's server.
            fresh = await a.open_session()
            assert "alpha2_only" in await a.tool_names(fresh)
            # The in-flight call finishes on the old server.
            alpha.gate.release.set()
            assert text((await in_flight.messages())[-1]) == "released by alpha"
            assert not alpha.gate.cancelled.is_set()
            await anyio.wait_all_tasks_blocked()
            assert alpha.recorder.of("session_ended") == []
            assert alpha.lifespans.exited == 0
            # The old server stops once its last session is gone.
            assert (await a.delete(busy)).status == 200
            assert (await a.delete(idle)).status == 200
            await wait_until(lambda: alpha.lifespans.exited == 1)
            assert "alpha2_only" in await a.tool_names(fresh)


async def test_update_with_drain_ends_old_sessions_at_the_deadline() -> None:
    with anyio.fail_after(GUARD):
        async with gated_tenant() as alpha:
            a = alpha.client
            busy, idle = await a.open_session(), await a.open_session()
            in_flight = await alpha.block(busy)
            assert alpha.tenants.update(TOKEN_A, factory_of("alpha2"), policy="drain", drain_timeout=0.3)
            assert "alpha_only" in await a.tool_names(idle)  # before the deadline: still served
            ended = await alpha.recorder.wait_for("session_ended", 2)
            assert {e.session_id for e in ended} == {busy, idle}
            assert {e.reason for e in ended} == {"drain_timeout"}
            await in_flight.read()  # the busy session's stream ended with it
            await alpha.gate.cancelled.wait()
            assert (await a.post(request(1, "ping"), session_id=idle)).status == 404
            await wait_until(lambda: alpha.lifespans.exited == 1)


async def test_remove_with_drain_ends_idle_sessions_now_and_busy_ones_when_done() -> None:
    with anyio.fail_after(GUARD):
        async with gated_tenant() as alpha:
            a = alpha.client
            busy, idle = await a.open_session(), await a.open_session()
            in_flight = await alpha.block(busy)

            assert alpha.tenants.remove(TOKEN_A, policy="drain", drain_timeout=60)
            [first] = await alpha.recorder.wait_for("session_ended")
            assert (first.session_id, first.reason) == (idle, "token_removed")
            [removed] = await alpha.recorder.wait_for("server_removed")
            assert removed.had_active_sessions
            assert removed.active_sessions == 2
            # The token itself is gone at once.
            assert (await a.post(request(1, "ping"), session_id=busy)).status == 401
            assert alpha.lifespans.exited == 0
            alpha.gate.release.set()
            assert text((await in_flight.messages())[-1]) == "released by alpha"
            ended = await alpha.recorder.wait_for("session_ended", 2, tenant_id=alpha.tenant_id)
            assert ended[1].session_id == busy
            assert ended[1].reason == "token_removed"
            await wait_until(lambda: alpha.lifespans.exited == 1)
            assert alpha.app.stats()["active_sessions"] == 0


async def test_remove_with_drain_ends_a_listening_session_at_the_deadline() -> None:
    """An open GET stream keeps a session busy forever; the drain deadline still ends it."""
    lifespans = Lifespans()
    tenants = Tenants({TOKEN_A: lambda: tenant_server("alpha", lifespans=lifespans)})
    app = McpApp(tenants=tenants)
    recorder = Recorder(app)
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            a = TokenClient(client, TOKEN_A)
            session_id = await a.open_session()
            stream = await a.get(session_id)
            assert tenants.remove(TOKEN_A, policy="drain", drain_timeout=0.2)
            await anyio.wait_all_tasks_blocked()
            assert not stream.complete
            await stream.read(timeout=5)
            [ended] = await recorder.wait_for("session_ended")
            assert (ended.session_id, ended.reason) == (session_id, "drain_timeout")
            await wait_until(lambda: lifespans.exited == 1)


# -- the modern (sessionless) era -----------------------------------------------------------------


async def test_modern_requests_route_by_token() -> None:
    app = two_tenants()
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            names = {}
            for token, tenant in ((TOKEN_A, "alpha"), (TOKEN_B, "bravo")):
                response = await TokenClient(client, token).modern(1, "tools/list")
                assert response.status == 200
                names[tenant] = {tool["name"] for tool in (await final_message(response))["result"]["tools"]}
                called = await TokenClient(client, token).modern(2, "tools/call", {"name": "whoami", "arguments": {}})
                assert text(await final_message(called)) == tenant
            assert "alpha_only" in names["alpha"]
            assert "alpha_only" not in names["bravo"]
            assert "bravo_only" in names["bravo"]
            assert "bravo_only" not in names["alpha"]
            for maybe_token in (UNKNOWN_TOKEN, None):
                refused = await TokenClient(client, maybe_token).modern(3, "tools/list")
                assert refused.status == 401
                params = challenge_params(refused.header("www-authenticate") or "")
                assert params.get("error") == ("invalid_token" if maybe_token else None)


# -- over real HTTP -------------------------------------------------------------------------------


@pytest.mark.integration
async def test_real_http_per_token_servers(anyio_backend: str) -> None:
    app = two_tenants(shutdown_timeout=1.0)
    with anyio.fail_after(30):
        async with serve_http(app, anyio_backend) as base, httpx.AsyncClient(trust_env=False, timeout=10) as http:
            url = base + "/mcp"
            a, b = HttpSession(http, url, TOKEN_A), HttpSession(http, url, TOKEN_B)
            seen: dict[str, list[tuple[str, set[str], str]]] = {"alpha": [], "bravo": []}

            async def one(session: HttpSession, tenant: str) -> None:
                session_id = await session.open_session()
                listed = await session.call(session_id, request(1, "tools/list"))
                tools = {tool["name"] for tool in listed["result"]["tools"]}
                who = text(await session.call(session_id, call_tool(2, "whoami")))
                seen[tenant].append((session_id, tools, who))

            # Several concurrent sessions per token.
            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(one, a, "alpha")
                    tg.start_soon(one, b, "bravo")
            for tenant, other in (("alpha", "bravo"), ("bravo", "alpha")):
                assert len({sid for sid, _, _ in seen[tenant]}) == 3
                for _, tools, who in seen[tenant]:
                    assert f"{tenant}_only" in tools
                    assert f"{other}_only" not in tools
                    assert who == tenant

            # Token B on token A's session: 404 for POST, GET and DELETE.
            a_session = seen["alpha"][0][0]
            assert (await b.post(request(3, "ping"), a_session)).status_code == 404
            get = await http.get(url, headers=b.headers(a_session, accept="text/event-stream"))
            assert get.status_code == 404
            assert (await http.delete(url, headers=b.headers(a_session))).status_code == 404
            assert answer_of(await a.post(request(4, "ping"), a_session))["result"] == {}

            # Unknown and missing tokens: 401 with the right challenge.
            unknown = await HttpSession(http, url, UNKNOWN_TOKEN).post(initialize(0))
            assert unknown.status_code == 401
            assert challenge_params(unknown.headers["www-authenticate"])["error"] == "invalid_token"
            anonymous = await HttpSession(http, url, None).post(initialize(0))
            assert anonymous.status_code == 401
            assert "error" not in challenge_params(anonymous.headers["www-authenticate"])

            assert (await http.delete(url, headers=a.headers(a_session))).status_code == 200
            assert app.stats()["sessions_per_tenant"] == {"alpha": 2, "bravo": 3}
