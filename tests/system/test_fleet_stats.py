"""Fleet stats: workers sharing a real redis-server, each served by a real HTTP server (their lifespans
run), report the same fleet from any of them; a worker stopped gracefully leaves the roster at once, a
killed one ages out; `asgi-mcp fleet` prints the workers and the sessions per tenant, never a token."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from mcp.server import MCPServer

from asgi_mcp import Credential, McpApp, TenantRecord, Tenants
from asgi_mcp._stores import fleet_from_url, tenant_store_from_url
from tests.kit.cli import command as cli_command
from tests.kit.cli import running_cli
from tests.kit.messages import LEGACY, initialize
from tests.kit.real_servers import SERVERS
from tests.kit.redis_server import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

SECRET = b"f" * 32
TOKENS = {"alpha": "sk-stats-alpha-7Hq2Vn5Rt8", "bravo": "sk-stats-bravo-3Kw9Zp4Lm1"}
WORKER_SERVERS = {"asyncio": ("uvicorn", "builtin-httptools-asyncio"), "trio": ("hypercorn-trio", "builtin-h11-trio")}
FLEET_FIELDS = ("workers_alive", "registered_tokens", "sessions", "sessions_per_tenant")


def plan() -> MCPServer:
    return MCPServer("stats-plan", version="1.0.0")


def worker(url: str, prefix: str) -> McpApp:
    tenants = Tenants(plans={"basic": plan}, store=tenant_store_from_url(url, secret=SECRET, prefix=prefix))
    return McpApp(tenants=tenants, fleet=fleet_from_url(url, prefix=prefix, session_ttl=60), session_idle_timeout=60)


async def register_tokens(url: str, prefix: str) -> None:
    store: Any = tenant_store_from_url(url, secret=SECRET, prefix=prefix)
    async with store:
        for tenant_id, token in TOKENS.items():
            record = TenantRecord(tenant_id=tenant_id, label=tenant_id, plan="basic")
            await store.add(record, Credential(digest=store.digest(token), tenant_id=tenant_id))


async def open_session(client: httpx.AsyncClient, endpoint: str, tenant: str) -> None:
    headers = {
        "authorization": f"Bearer {TOKENS[tenant]}",
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
        "mcp-protocol-version": LEGACY,
    }
    answer = await client.post(endpoint, json=initialize(1), headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers.get("mcp-session-id")


@asynccontextmanager
async def served(app: McpApp, server: str) -> AsyncIterator[str]:
    async with SERVERS[server][1](app) as base:
        yield base + "/mcp"


def fleet_view(stats: dict[str, Any]) -> dict[str, Any]:
    """What every worker must agree on: the fleet's fields and the workers' ids and session counts."""
    workers = [(w["worker_id"], w["sessions"]) for w in stats["workers"]]
    return {name: stats[name] for name in FLEET_FIELDS} | {"workers": workers}


async def fleet_cli(url: str, prefix: str, *, secret: bool) -> str:
    env = {name: value for name, value in os.environ.items() if name != "ASGI_MCP_FLEET_SECRET"}
    if secret:
        env["ASGI_MCP_FLEET_SECRET"] = SECRET.decode()
    done = await anyio.run_process([*cli_command(), "fleet", "--redis", url, "--prefix", prefix], env=env, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


async def test_every_worker_reports_the_same_fleet_and_a_stopped_worker_leaves_at_once(
    anyio_backend: str, shared_redis: RedisServer, redis_prefix: str
) -> None:
    url = shared_redis.url
    await register_tokens(url, redis_prefix)
    first_server, second_server = WORKER_SERVERS[anyio_backend]
    first, second = worker(url, redis_prefix), worker(url, redis_prefix)
    with anyio.fail_after(60):
        async with served(first, first_server) as first_url, httpx.AsyncClient() as client:
            async with AsyncExitStack() as second_run:
                second_url = await second_run.enter_async_context(served(second, second_server))
                await open_session(client, first_url, "alpha")
                await open_session(client, first_url, "alpha")
                await open_session(client, second_url, "bravo")
                # Each report writes its own worker's record first: after both reported once, both are current.
                await first.fleet_stats()
                from_second = await second.fleet_stats()
                from_first = await first.fleet_stats()
                assert fleet_view(from_first) == fleet_view(from_second)
                assert from_first["workers_alive"] == 2
                assert from_first["registered_tokens"] == 2
                assert from_first["sessions_per_tenant"] == {"alpha": 2, "bravo": 1}
                assert from_first["sessions"] == 3
                ids = {w["worker_id"] for w in from_first["workers"]}
                assert ids == {from_first["worker_id"], from_second["worker_id"]}
                assert all(w["age"] >= 0 and 0 <= w["last_beat"] < 60 for w in from_first["workers"])
                assert from_first["this_worker"]["sessions_per_tenant"] == {"alpha": 2}
                assert from_second["this_worker"]["sessions_per_tenant"] == {"bravo": 1}

                printed = await fleet_cli(url, redis_prefix, secret=True)
                assert "workers alive: 2" in printed
                assert all(worker_id in printed for worker_id in ids)
                assert "alpha\t2" in printed
                assert "bravo\t1" in printed
                assert "tokens registered: 2" in printed
                assert not any(token in printed for token in TOKENS.values())
                assert "tokens registered" not in await fleet_cli(url, redis_prefix, secret=False)
            # The second worker stopped gracefully (its lifespan ended): gone at once, its sessions with it.
            after = await first.fleet_stats()
            assert [w["worker_id"] for w in after["workers"]] == [from_first["worker_id"]]
            assert after["sessions_per_tenant"] == {"alpha": 2}
            assert "workers alive: 1" in await fleet_cli(url, redis_prefix, secret=False)


async def test_a_killed_worker_ages_out_of_the_fleet(
    anyio_backend: str, shared_redis: RedisServer, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker process killed (SIGKILL: no shutdown, no leave) stays listed until it misses three beats."""
    url = shared_redis.url
    monkeypatch.setenv("FLEET_REDIS_URL", url)
    monkeypatch.setenv("FLEET_PREFIX", redis_prefix)
    monkeypatch.setenv("FLEET_HEARTBEAT", "0.2")  # alive for 0.6 s after its last beat
    first = worker(url, redis_prefix)
    args = ["serve", "tests.kit.fleet_worker:app", "--port", "0", *(["--trio"] if anyio_backend == "trio" else [])]
    with anyio.fail_after(60):
        async with served(first, WORKER_SERVERS[anyio_backend][0]), running_cli(args) as killed:
            await killed.url()  # started: it beat before its startup completed
            assert (await first.fleet_stats())["workers_alive"] == 2
            killed.process.send_signal(signal.SIGKILL)
            await killed.process.wait()
            with anyio.fail_after(10):
                while (await first.fleet_stats())["workers_alive"] != 1:  # noqa: ASYNC110 - Redis's clock ages it
                    await anyio.sleep(0.1)


async def test_without_a_roster_the_fleet_is_this_worker() -> None:
    tenants = Tenants({TOKENS["alpha"]: plan})
    app = McpApp(tenants=tenants)
    async with app.lifespan_context():
        stats = await app.fleet_stats()
    assert stats["worker_id"] is None
    assert stats["workers"] == []
    assert stats["registered_tokens"] == 1
    assert stats["sessions_per_tenant"] == {}
    assert stats["this_worker"]["running"] is True
