"""The app's side routes (`asgi_mcp._app.routes`), over the ASGI interface on asyncio and Trio.

Liveness and readiness: opt-in, outside authentication, one behaviour for both (GET and HEAD, plain
text, never cached, 405 otherwise); readiness is 200 exactly while the app runs, driven through the
ASGI lifespan protocol; neither says anything about tenants. Then RFC 9728 metadata and 404."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
import pytest
from mcp.server import MCPServer

from asgi_mcp import McpApp, StaticTokenVerifier, Tenants
from tests.kit.mcp_servers import ALL_TOKENS, TOKEN_A, TOKEN_B, UNKNOWN_TOKEN, factory_of
from tests.kit.memory import AsgiClient, Lifespan, Response, TokenClient, serving
from tests.kit.messages import initialize
from tests.kit.polling import wait_until

pytestmark = pytest.mark.anyio

GUARD: Final = 10.0
HEALTH: Final = "/healthz"
READY: Final = "/readyz"


@dataclass
class LifespanGates:
    """The MCP server's lifespan blocks on entry and on exit until the test lets it go on."""

    entering: anyio.Event = field(default_factory=anyio.Event)
    finish_startup: anyio.Event = field(default_factory=anyio.Event)
    exiting: anyio.Event = field(default_factory=anyio.Event)
    finish_shutdown: anyio.Event = field(default_factory=anyio.Event)


def gated_server(gates: LifespanGates) -> MCPServer:
    @asynccontextmanager
    async def lifespan(server: Any) -> AsyncIterator[dict[str, Any]]:
        gates.entering.set()
        await gates.finish_startup.wait()
        try:
            yield {}
        finally:
            gates.exiting.set()
            with anyio.CancelScope(shield=True):
                await gates.finish_shutdown.wait()

    mcp = MCPServer("health-test", version="1.0.0", lifespan=lifespan)

    @mcp.tool()
    def ping() -> str:
        return "pong"

    return mcp


async def get(client: AsgiClient, path: str, method: str = "GET", **headers: str) -> Response:
    response = await client.request(method, path=path, headers=headers)
    await response.read()
    return response


async def probe(client: AsgiClient) -> tuple[int, bytes, int, bytes]:
    health = await get(client, HEALTH)
    ready = await get(client, READY)
    return health.status, health.body, ready.status, ready.body


async def test_readiness_follows_the_lifespan_and_liveness_stays_ok() -> None:
    gates = LifespanGates()
    app = McpApp(gated_server(gates), health_path=HEALTH, ready_path=READY, shutdown_timeout=GUARD)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            client = AsgiClient(app, tg)
            lifespan = Lifespan(app, tg)
            seen: dict[str, tuple[int, bytes, int, bytes]] = {"before": await probe(client)}

            started: list[dict[str, Any]] = []

            async def start() -> None:
                started.append(await lifespan.startup())

            tg.start_soon(start)
            await gates.entering.wait()
            seen["starting"] = await probe(client)
            gates.finish_startup.set()
            await wait_until(lambda: bool(started))
            assert started == [{"type": "lifespan.startup.complete"}]
            seen["running"] = await probe(client)

            stopped: list[dict[str, Any]] = []

            async def stop() -> None:
                stopped.append(await lifespan.shutdown())

            tg.start_soon(stop)
            await gates.exiting.wait()
            seen["stopping"] = await probe(client)
            refused = await client.post(initialize(0))
            await refused.read()
            gates.finish_shutdown.set()
            await wait_until(lambda: bool(stopped))
            assert stopped == [{"type": "lifespan.shutdown.complete"}]
            seen["after"] = await probe(client)

    ok, live = (200, b"ok"), (503, b"not ready")
    assert seen == {
        "before": (*ok, *live),
        "starting": (*ok, *live),
        "running": (*ok, 200, b"ready"),
        "stopping": (*ok, *live),
        "after": (*ok, *live),
    }
    assert refused.status == 503  # the MCP endpoint agrees with /readyz during shutdown


async def test_both_probes_answer_by_the_same_rules() -> None:
    app = McpApp(gated_server(_open_gates()), health_path=HEALTH, ready_path=READY)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            before = {method: await get(AsgiClient(app, tg), READY, method) for method in ("GET", "HEAD")}
        async with serving(app) as client:
            running = {
                (path, method): await get(client, path, method)
                for path in (HEALTH, READY)
                for method in ("GET", "HEAD")
            }
    for (path, method), response in running.items():
        body = b"ok" if path == HEALTH else b"ready"
        assert response.status == 200
        assert response.body == (body if method == "GET" else b"")
        assert response.raw_headers == [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"cache-control", b"no-store"),
            (b"content-length", str(len(body)).encode()),
        ], (path, method)
    for method, response in before.items():
        assert response.status == 503
        assert response.body == (b"not ready" if method == "GET" else b"")
        assert response.header("content-length") == "9"
        assert response.header("cache-control") == "no-store"


async def test_neither_route_needs_a_token_nor_reveals_tenant_data() -> None:
    tenants = Tenants()
    tenants.add(TOKEN_A, factory_of("alpha"), label="tenant-alpha")
    tenants.add(TOKEN_B, factory_of("bravo"))
    tenant_ids = ["tenant-alpha", *(t.tenant_id for t in tenants)]
    app = McpApp(tenants=tenants, health_path=HEALTH, ready_path=READY)
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            # A live session and a built server: there is tenant state to leak.
            await TokenClient(client, TOKEN_A).open_session()
            answers: list[Response] = []
            for authorization in (None, f"Bearer {TOKEN_A}", f"Bearer {UNKNOWN_TOKEN}", "Basic Zm9vOmJhcg=="):
                headers = {"authorization": authorization} if authorization is not None else {}
                answers.extend([await get(client, path, **headers) for path in (HEALTH, READY)])
            # The endpoint itself still wants a token.
            endpoint = await client.post(initialize(0))
            await endpoint.read()
    assert endpoint.status == 401
    for response in answers:
        assert response.status == 200
        assert response.body in (b"ok", b"ready")
        assert response.header("www-authenticate") is None
        assert response.header("mcp-session-id") is None
        text = response.body.decode() + repr(response.raw_headers)
        for secret in (*ALL_TOKENS, *tenant_ids, "alpha", "bravo"):
            assert secret not in text


async def test_routes_are_opt_in() -> None:
    app = McpApp(gated_server(_open_gates()))
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            statuses = [(await get(client, path)).status for path in (HEALTH, READY)]
    assert statuses == [404, 404]


async def test_custom_paths_under_a_mount_point() -> None:
    app = McpApp(gated_server(_open_gates()), health_path="/live", ready_path="ready")
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            results: dict[str, int] = {}
            for path in ("/api/live", "/api/ready", "/api/healthz", "/live"):
                scope = client.scope("GET", path, {})
                scope["root_path"] = "/api"
                response = await client.request("GET", scope=scope)
                await response.read()
                results[path] = response.status
    # `/live` without the mount prefix is still served: a host may strip `root_path` from `path`.
    assert results == {"/api/live": 200, "/api/ready": 200, "/api/healthz": 404, "/live": 200}


@pytest.mark.parametrize("method", ["POST", "DELETE", "PUT", "OPTIONS"])
async def test_other_methods_get_405_on_both_probes_running_or_not(method: str) -> None:
    app = McpApp(gated_server(_open_gates()), health_path=HEALTH, ready_path=READY)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            stopped = [await get(AsgiClient(app, tg), path, method) for path in (HEALTH, READY)]
        async with serving(app) as client:
            running = [await get(client, path, method) for path in (HEALTH, READY)]
    for response in (*stopped, *running):
        assert response.status == 405
        assert response.header("allow") == "GET, HEAD"
        assert response.body == b""


async def test_metadata_is_served_only_with_authorization_servers_and_the_rest_is_404() -> None:
    verifier = StaticTokenVerifier({"a-token": {"client_id": "c", "scopes": []}})
    with_metadata = McpApp(
        gated_server(_open_gates()), token_verifier=verifier, authorization_servers=["https://auth.example.com"]
    )
    without = McpApp(gated_server(_open_gates()), token_verifier=verifier)
    with anyio.fail_after(GUARD):
        async with serving(with_metadata) as client:
            paths = ("/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource")
            documents = [await get(client, path) for path in paths]
            head = await get(client, paths[0], "HEAD")
            other = await get(client, "/elsewhere")
        async with serving(without) as client:
            unserved = await get(client, paths[0])
    for document in documents:
        assert document.status == 200
        assert document.header("cache-control") == "public, max-age=3600"
        assert await document.json() == {
            "resource": "http://127.0.0.1:8000/mcp",
            "authorization_servers": ["https://auth.example.com"],
            "bearer_methods_supported": ["header"],
        }
    assert head.status == 200
    assert (other.status, await other.json()) == (404, {"error": "not_found"})
    assert unserved.status == 404


def _open_gates() -> LifespanGates:
    gates = LifespanGates()
    gates.finish_startup.set()
    gates.finish_shutdown.set()
    return gates
