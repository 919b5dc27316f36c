"""Operator features per tenant over the real ASGI interface, both eras, both backends: rate limits,
the per-tenant session cap, token rotation and expiry (streams end with their token), audit."""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
import httpx
import pytest

from asgi_mcp import McpApp, Tenants
from asgi_mcp._core.errors import RATE_LIMITED
from asgi_mcp._core.token_bucket import Rate
from asgi_mcp._ops.audit import AuditPolicy
from asgi_mcp._tenancy.limits import RateLimits, TenantLimits
from tests.kit.http import HttpSession, answer_of
from tests.kit.mcp_servers import ALL_TOKENS, TOKEN_A, TOKEN_B, TOKEN_C, Probe, factory_of, tenant_server
from tests.kit.memory import TokenClient, serving
from tests.kit.messages import call_tool, modern, request
from tests.kit.polling import Recorder
from tests.kit.real_servers import serve_http

pytestmark = pytest.mark.anyio

GUARD = 10.0


class Clock:
    """Wall-clock seconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def limited_app(limits: TenantLimits, *, clock: Clock | None = None, **options: Any) -> tuple[McpApp, Tenants]:
    tenants = Tenants()
    tenants.add(TOKEN_A, factory_of("alpha"), label="alpha", plan="free")
    tenants.add(TOKEN_B, factory_of("bravo"), label="bravo", plan="pro")
    rate_limits = RateLimits(plans={"free": limits}, clock=clock or Clock())
    return McpApp(tenants=tenants, rate_limits=rate_limits, **options), tenants


def assert_rate_limited(status: int, retry_after: str | None, answer: dict[str, Any], request_id: int) -> int:
    assert status == 429
    assert retry_after is not None
    assert int(retry_after) >= 1
    assert answer["id"] == request_id
    assert answer["error"]["code"] == RATE_LIMITED
    assert answer["error"]["data"]["retryAfter"] == int(retry_after)
    return int(retry_after)


# -- rate limits ----------------------------------------------------------------------------------


async def test_legacy_tool_calls_over_the_limit_get_429_with_retry_after() -> None:
    clock = Clock()
    app, _ = limited_app(TenantLimits(tool_calls=Rate.per_minute(2)), clock=clock)
    recorder = Recorder(app, ["audit"])
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            a, b = TokenClient(client, TOKEN_A), TokenClient(client, TOKEN_B)
            session = await a.open_session()
            for request_id in (1, 2):
                assert "result" in await a.call(session, call_tool(request_id, "whoami"))
            refused = await a.post(call_tool(3, "whoami"), session_id=session)
            body = json.loads(await refused.read())
            wait = assert_rate_limited(refused.status, refused.header("retry-after"), body, 3)
            assert wait == 30  # one token every 30 s at 2 a minute
            # Other methods and other tenants are not limited by it.
            assert "result" in await a.call(session, request(4, "tools/list"))
            other = await b.open_session()
            for request_id in (1, 2, 3):
                assert "result" in await b.call(other, call_tool(request_id, "whoami"))
            clock.now += 30
            assert "result" in await a.call(session, call_tool(5, "whoami"))
            [record] = await recorder.wait_for("audit", outcome="rate_limited")
            assert record.tenant_id == "alpha"
            assert record.session_id == session
            assert record.status == 429
            assert app.stats()["rate_limited"] == 1


async def test_modern_requests_share_the_tenants_buckets() -> None:
    app, _ = limited_app(TenantLimits(requests=Rate.per_minute(3), completions=Rate.per_minute(1)))
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            a = TokenClient(client, TOKEN_A)
            first = await a.modern(1, "tools/list")
            assert first.status == 200
            await first.read()
            ref = {"type": "ref/prompt", "name": "p"}
            done = await a.modern(2, "completion/complete", {"ref": ref, "argument": {"name": "x", "value": ""}})
            await done.read()
            refused = await a.modern(3, "completion/complete", {"ref": ref, "argument": {"name": "x", "value": ""}})
            assert_rate_limited(refused.status, refused.header("retry-after"), json.loads(await refused.read()), 3)
            third = await a.modern(4, "tools/list")
            await third.read()
            assert third.status == 200
            over = await a.modern(5, "tools/list")
            assert_rate_limited(over.status, over.header("retry-after"), json.loads(await over.read()), 5)


async def test_per_tool_limits_and_unauthenticated_requests_never_reach_the_limiter() -> None:
    app, _ = limited_app(TenantLimits(tools={"fail": Rate.per_hour(1)}))
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            a = TokenClient(client, TOKEN_A)
            session = await a.open_session()
            await a.call(session, call_tool(1, "fail"))
            refused = await a.post(call_tool(2, "fail"), session_id=session)
            assert refused.status == 429
            assert int(refused.header("retry-after") or 0) == 3600
            assert "result" in await a.call(session, call_tool(3, "whoami"))
            for _ in range(3):
                anonymous = await TokenClient(client, None).post(call_tool(9, "fail"))
                assert anonymous.status == 401
                wrong = await TokenClient(client, TOKEN_C).post(call_tool(9, "fail"))
                assert wrong.status == 401
            assert app.stats()["rate_limited"] == 1


async def test_rotating_a_token_keeps_its_tenants_limits() -> None:
    app, tenants = limited_app(TenantLimits(tool_calls=Rate.per_minute(1)))
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            a = TokenClient(client, TOKEN_A)
            first = await a.modern(1, "tools/call", {"name": "whoami", "arguments": {}})
            await first.read()
            tenants.rotate_token(TOKEN_A, TOKEN_C, grace=60)
            rotated = await TokenClient(client, TOKEN_C).modern(2, "tools/call", {"name": "whoami", "arguments": {}})
            assert rotated.status == 429


# -- the per-tenant session cap -------------------------------------------------------------------


async def test_one_tenant_cannot_take_every_session() -> None:
    tenants = Tenants()
    tenants.add(TOKEN_A, factory_of("alpha"), label="alpha")
    tenants.add(TOKEN_B, factory_of("bravo"), label="bravo")
    app = McpApp(tenants=tenants, max_sessions=3, max_sessions_per_tenant=2, session_idle_timeout=None)
    recorder = Recorder(app, ["audit"])
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            a, b = TokenClient(client, TOKEN_A), TokenClient(client, TOKEN_B)
            first = await a.open_session()
            await a.open_session()
            refused = await a.post(request(0, "initialize", _init_params()))
            assert refused.status == 429
            assert refused.header("retry-after") == "1"
            answer = json.loads(await refused.read())
            assert answer["error"]["code"] == RATE_LIMITED
            assert answer["error"]["data"] == {"retryAfter": 1}
            assert app.stats()["sessions_per_tenant"] == {"alpha": 2}
            await b.open_session()  # the other tenant still gets one
            # Freed by DELETE, a slot is usable again.
            assert (await a.delete(first)).status == 200
            await a.open_session()
            [audit] = recorder.of("audit")
            assert (audit.outcome, audit.tenant_id, audit.status) == ("rate_limited", "alpha", 429)


async def test_the_idle_reaper_frees_a_capped_tenants_slots() -> None:
    # Its own test: with a short idle timeout a session may end at any moment, which the cap's
    # checks above must not depend on; here only the reaper's ends and the freed slots count.
    tenants = Tenants()
    tenants.add(TOKEN_A, factory_of("alpha"), label="alpha")
    app = McpApp(tenants=tenants, max_sessions_per_tenant=2, session_idle_timeout=0.5)
    recorder = Recorder(app, ["session_ended"])
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            a = TokenClient(client, TOKEN_A)
            await a.open_session()
            await a.open_session()
            await recorder.wait_for("session_ended", 2, reason="idle_timeout")
            assert app.stats()["active_sessions"] == 0
            await a.open_session()
            await a.open_session()


def _init_params() -> dict[str, Any]:
    return {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}


# -- rotation and expiry --------------------------------------------------------------------------


async def test_rotation_keeps_both_tokens_during_grace_then_ends_the_old_ones_sessions_and_streams() -> None:
    clock = Clock()
    tenants = Tenants(clock=clock)
    tenants.add(TOKEN_A, factory_of("alpha"), label="alpha")
    app = McpApp(tenants=tenants)
    recorder = Recorder(app)
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            old, new = TokenClient(client, TOKEN_A), TokenClient(client, TOKEN_C)
            kept = await old.open_session()  # will switch to the new token
            left = await old.open_session()  # stays on the old token
            stream = await old.get(left)
            assert tenants.rotate_token(TOKEN_A, TOKEN_C, grace=300) == "alpha"
            [rotated] = await recorder.wait_for("token_rotated")
            assert (rotated.tenant_id, rotated.grace) == ("alpha", 300)
            # Same tenant, same sessions, both tokens.
            assert "result" in await new.call(kept, call_tool(1, "whoami"))
            assert "result" in await old.call(left, call_tool(2, "whoami"))
            assert len(tenants) == 1
            clock.now += 301
            assert (await old.post(request(3, "ping"), session_id=left)).status == 401
            tenants.expire()
            await stream.read()
            assert stream.complete
            [ended] = await recorder.wait_for("session_ended")
            assert (ended.session_id, ended.reason) == (left, "token_expired")
            [expired] = await recorder.wait_for("token_expired")
            assert (expired.tenant_id, expired.reason) == ("alpha", "rotated")
            assert "result" in await new.call(kept, call_tool(4, "whoami"))
            stats = app.stats()
            assert (stats["tokens_rotated"], stats["tokens_expired"], stats["active_sessions"]) == (1, 1, 1)
    _no_token_in(recorder.events)


async def test_rotation_with_no_grace_cuts_the_old_token_at_once() -> None:
    tenants = Tenants({TOKEN_A: factory_of("alpha")})
    app = McpApp(tenants=tenants)
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            old = TokenClient(client, TOKEN_A)
            session = await old.open_session()
            stream = await old.get(session)
            tenants.rotate_token(TOKEN_A, TOKEN_B, grace=0)
            await stream.read()
            assert (await old.post(request(1, "ping"), session_id=session)).status == 401
            assert app.stats()["active_sessions"] == 0
            fresh = TokenClient(client, TOKEN_B)
            assert "result" in await fresh.call(await fresh.open_session(), call_tool(1, "whoami"))


async def test_a_token_past_not_after_gets_401_and_its_tenant_ends() -> None:
    clock = Clock()
    tenants = Tenants(clock=clock)
    tenants.add(TOKEN_A, factory_of("alpha"), label="alpha", not_after=clock.now + 60)
    app = McpApp(tenants=tenants)
    recorder = Recorder(app)
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            a = TokenClient(client, TOKEN_A)
            session = await a.open_session()
            stream = await a.get(session)
            clock.now += 60
            assert (await a.modern(1, "tools/list")).status == 401
            await stream.read()
            [ended] = await recorder.wait_for("session_ended")
            assert (ended.session_id, ended.reason) == (session, "token_expired")
            [expired] = await recorder.wait_for("token_expired")
            assert (expired.tenant_id, expired.reason) == ("alpha", "expired")
            assert app.stats()["registered_tokens"] == 0


async def test_a_stream_ends_at_its_tokens_expiry_by_itself() -> None:
    """No lookup, no sweep needed: the exchange's deadline is the token's expiry (real clock)."""
    tenants = Tenants()
    app = McpApp(tenants=tenants)
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            tenants.add(TOKEN_A, factory_of("alpha"), not_after=_wall() + 60)
            a = TokenClient(client, TOKEN_A)
            session = await a.open_session()
            tenants.add(TOKEN_B, factory_of("bravo"), not_after=_wall() + 0.3)
            b = TokenClient(client, TOKEN_B)
            other = await b.open_session()
            short, long = await b.get(other), await a.get(session)
            with anyio.fail_after(1.5):
                await short.read()
            assert not long.complete


async def test_a_tool_call_in_flight_writes_nothing_after_its_token_is_cut() -> None:
    """The call ran silent long enough for its SSE head to go out alone: the stream ends, empty."""
    gate = Probe()
    tenants = Tenants({TOKEN_A: lambda: tenant_server("alpha", gate=gate)})
    app = McpApp(tenants=tenants, keepalive_interval=3600)  # no comment in the stream either
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            old = TokenClient(client, TOKEN_A)
            session = await old.open_session()
            call = await old.post(call_tool(1, "block"), session_id=session)  # returns with the head
            await gate.started.wait()
            tenants.rotate_token(TOKEN_A, TOKEN_B, grace=0)
            body = await call.read()
            assert (call.status, call.content_type) == (200, "text/event-stream")
            assert body == b""
            await gate.cancelled.wait()  # its session ended, so did its handler


async def test_a_silent_tool_call_cut_before_its_head_went_out_gets_the_tokens_refusal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nothing was sent yet (the head waits for the first frame, `HEAD_DELAY`): the answer is the 401
    a request with that token now gets, as in the 2026-07-28 era, not an empty stream."""
    from asgi_mcp._io import response

    monkeypatch.setattr(response, "HEAD_DELAY", 3600.0)  # the head waits for the whole test
    gate = Probe()
    tenants = Tenants({TOKEN_A: lambda: tenant_server("alpha", gate=gate)})
    app = McpApp(tenants=tenants, keepalive_interval=3600)
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            old = TokenClient(client, TOKEN_A)
            session = await old.open_session()
            call = await old.post(call_tool(1, "block"), session_id=session, wait=False)
            await gate.started.wait()
            tenants.rotate_token(TOKEN_A, TOKEN_B, grace=0)
            await call.started()
            assert call.status == 401
            assert 'error="invalid_token"' in (call.header("www-authenticate") or "")
            refusal = json.loads(await call.read())
            assert refusal == {"error": "invalid_token", "error_description": "The access token is no longer valid"}
            await gate.cancelled.wait()
            # The session went with the token: the new token does not reach it either.
            assert (await TokenClient(client, TOKEN_B).post(request(2, "ping"), session_id=session)).status == 404


def _wall() -> float:
    import time

    return time.time()


# -- audit ----------------------------------------------------------------------------------------


async def test_every_tool_call_and_refusal_is_audited_without_tokens(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="asgi_mcp.audit")
    tenants = Tenants()
    tenants.add(TOKEN_A, factory_of("alpha"), label="alpha")
    app = McpApp(tenants=tenants)
    recorder = Recorder(app, ["audit"])
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            a = TokenClient(client, TOKEN_A)
            session = await a.open_session()
            await a.call(session, call_tool(1, "whoami", {"secret": "s3"}))
            await a.call(session, call_tool(2, "fail"))
            await a.call(session, call_tool(3, "nope"))
            modern = await a.modern(4, "tools/call", {"name": "whoami", "arguments": {}})
            await modern.read()
            assert (await TokenClient(client, TOKEN_B).post(request(5, "ping"))).status == 401
            records = await recorder.wait_for("audit", 5)
    by_outcome = {(r.tool, r.outcome) for r in records}
    assert {("whoami", "ok"), ("fail", "tool_error"), (None, "refused")} <= by_outcome
    legacy = next(r for r in records if r.tool == "whoami" and r.session_id == session)
    assert (legacy.tenant_id, legacy.client_name, legacy.client_version) == ("alpha", "asgi-mcp-tests", "0")
    assert legacy.arguments is None
    assert legacy.result is None
    assert legacy.duration >= 0
    modern_record = next(r for r in records if r.tool == "whoami" and r.session_id is None)
    assert modern_record.tenant_id == "alpha"
    refused = next(r for r in records if r.outcome == "refused")
    assert (refused.tenant_id, refused.status) == (None, 401)
    assert len([r for r in caplog.records if r.name == "asgi_mcp.audit"]) == len(records)
    _no_token_in(records)
    _no_token_in([vars(r) for r in caplog.records])


async def test_arguments_and_results_only_on_opt_in_through_the_redaction_hook() -> None:
    def redact(tool: str, arguments: Any, result: Any) -> tuple[Any, Any]:
        return {k: "***" for k in arguments or {}}, result

    tenants = Tenants({TOKEN_A: factory_of("alpha")})
    app = McpApp(tenants=tenants, audit=AuditPolicy(include_arguments=True, include_results=True, redact=redact))
    recorder = Recorder(app, ["audit"])
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            a = TokenClient(client, TOKEN_A)
            session = await a.open_session()
            await a.call(session, call_tool(1, "whoami", {"secret": "s3"}))
            [record] = await recorder.wait_for("audit")
    assert record.arguments == {"secret": "***"}
    assert record.result["content"][0]["text"] == "alpha"


def _no_token_in(items: list[Any]) -> None:
    text = repr(items)
    for token in ALL_TOKENS:
        assert token not in text


# -- the demo's free plan -------------------------------------------------------------------------


async def test_the_demos_free_plan_allows_ten_tool_calls_a_minute() -> None:
    from asgi_mcp._serving.demo import build_demo_server

    server = build_demo_server(host="127.0.0.1", port=0)
    with anyio.fail_after(GUARD):
        async with serving(server.app) as client:
            free, pro = TokenClient(client, "demo-free-token"), TokenClient(client, "demo-pro-token")
            session, other = await free.open_session(), await pro.open_session()
            for request_id in range(10):
                assert "result" in await free.call(session, call_tool(request_id, "hello"))
                assert "result" in await pro.call(other, call_tool(request_id, "echo", {"text": "x"}))
            refused = await free.post(call_tool(10, "hello"), session_id=session)
            assert refused.status == 429
            assert refused.header("retry-after") == "6"  # a token every 6 s
            assert "result" in await pro.call(other, call_tool(10, "echo", {"text": "x"}))


# -- over real HTTP (uvicorn on asyncio, hypercorn's Trio worker on Trio) -------------------------


async def test_real_http_rate_limit_and_a_rotation_ending_a_stream(anyio_backend: str) -> None:
    app, tenants = limited_app(TenantLimits(tool_calls=Rate.per_minute(1)), shutdown_timeout=1.0)
    with anyio.fail_after(30):
        async with serve_http(app, anyio_backend) as base, httpx.AsyncClient(trust_env=False, timeout=10) as http:
            url = base + "/mcp"
            a = HttpSession(http, url, TOKEN_A)
            session = await a.open_session()
            assert "result" in answer_of(await a.post(call_tool(1, "whoami"), session))
            refused = await a.post(call_tool(2, "whoami"), session)
            assert refused.status_code == 429
            assert refused.headers["retry-after"] == "60"
            assert refused.json()["error"]["data"] == {"retryAfter": 60}
            unauthenticated = await HttpSession(http, url, None).post(call_tool(3, "whoami"), session)
            assert unauthenticated.status_code == 401
            # A GET stream of the old token ends when the token is rotated out; the client sees its end.
            headers = a.headers(session, accept="text/event-stream")
            async with http.stream("GET", url, headers=headers) as stream:
                assert stream.status_code == 200
                tenants.rotate_token(TOKEN_A, TOKEN_C, grace=0)
                with anyio.fail_after(1.0):
                    async for _ in stream.aiter_bytes():
                        pass
            assert (await a.post(request(4, "ping"), session)).status_code == 401


async def test_removing_a_token_cuts_its_exchanges_at_once_or_at_the_drain_deadline() -> None:
    for policy, drain_timeout in (("close", 60.0), ("drain", 0.2)):
        gate = Probe()
        tenants = Tenants({TOKEN_A: lambda gate=gate: tenant_server("alpha", gate=gate)})  # type: ignore[misc]
        app = McpApp(tenants=tenants)
        with anyio.fail_after(GUARD):
            async with serving(app) as client:
                body, headers = modern(1, "tools/call", {"name": "block", "arguments": {}})
                auth = {"authorization": f"Bearer {TOKEN_A}"}
                call = await client.post(body, headers={**headers, **auth}, wait=False)
                await gate.started.wait()
                assert tenants.remove(TOKEN_A, policy=policy, drain_timeout=drain_timeout)  # type: ignore[arg-type]
                with anyio.fail_after(2.0):
                    await call.started()
                assert call.status == 401  # nothing was sent yet: the answer is the token's refusal
                assert b"released" not in await call.read()
                await gate.cancelled.wait()  # a 2026-07-28 exchange ended is a cancelled request


async def test_a_verified_tokens_streams_end_at_its_expiry() -> None:
    """A JWT or introspected token carries `exp`: its GET stream ends then, with `token_expired`."""
    from asgi_mcp import StaticTokenVerifier

    expires_at = int(_wall()) + 2  # whole seconds, as `exp` is
    verifier = StaticTokenVerifier(
        {
            TOKEN_A: {"client_id": "short", "expires_at": expires_at},
            TOKEN_B: {"client_id": "long", "expires_at": expires_at + 3600},
        }
    )
    app = McpApp(tenant_server("one"), token_verifier=verifier)
    recorder = Recorder(app, ["token_expired"])
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            short, long = TokenClient(client, TOKEN_A), TokenClient(client, TOKEN_B)
            short_stream = await short.get(await short.open_session())
            long_stream = await long.get(await long.open_session())
            with anyio.fail_after(expires_at - _wall() + 1.0):
                await short_stream.read()
            assert _wall() >= expires_at - 0.05
            assert not long_stream.complete
            [expired] = await recorder.wait_for("token_expired")
            assert (expired.tenant_id, expired.reason) == (None, "verified_expiry")
            assert app.stats()["tokens_expired"] == 1
            long_stream.disconnect()
