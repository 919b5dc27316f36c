"""The tenant registry shared through Redis: two workers whose `Tenants` mirror one `RedisTenantStore`
(a real redis-server), served by real HTTP servers. A token written to the store (as `asgi-mcp tokens`
does) is in force on both within 100 ms; its plan names the factory each worker builds; removed, it is
401 on both and its sessions and streams end on both."""

from __future__ import annotations

import os
import re
import time
from typing import Any

import anyio
import httpx
import pytest
from mcp.server import MCPServer

from asgi_mcp import Credential, McpApp, TenantRecord, Tenants
from asgi_mcp._stores import fleet_from_url, tenant_store_from_url
from tests.kit.cli import command as cli_command
from tests.kit.http import headers
from tests.kit.messages import call_tool, initialize, notification
from tests.kit.polling import wait_until
from tests.kit.real_servers import serve_workers
from tests.kit.redis_server import RedisServer

pytestmark = pytest.mark.anyio

SECRET = b"s" * 32
TOKEN = "sk-mirrored-4Fh8Kq2Zt6Wn"


def gold() -> MCPServer:
    mcp = MCPServer("gold-plan", version="1.0.0")

    @mcp.tool()
    def echo(text: str) -> str:
        return f"gold:{text}"

    return mcp


def worker(url: str, prefix: str) -> McpApp:
    tenants = Tenants(plans={"gold": gold}, store=tenant_store_from_url(url, secret=SECRET, prefix=prefix))
    fleet = fleet_from_url(url, prefix=prefix, session_ttl=60)
    return McpApp(tenants=tenants, fleet=fleet, session_idle_timeout=60)


async def test_a_token_written_to_the_store_is_in_force_on_every_worker(
    shared_redis: RedisServer, redis_prefix: str, anyio_backend: str
) -> None:
    with anyio.fail_after(40):
        async with (
            serve_workers(lambda: worker(shared_redis.url, redis_prefix), anyio_backend) as workers,
            tenant_store_from_url(shared_redis.url, secret=SECRET, prefix=redis_prefix) as writer,  # type: ignore[attr-defined]
            httpx.AsyncClient(timeout=10) as client,
        ):
            first, second = workers[0][1], workers[1][1]
            registries: list[Any] = [app.config.tenants for app, _ in workers]
            # Twenty tokens, one after another: each in force on both workers within 100 ms.
            delays = []
            for n in range(20):
                token = f"sk-burst-{n}-7Yq3Lm"
                started = time.perf_counter()
                credential = Credential(digest=writer.digest(token), tenant_id=f"burst-{n}")
                await writer.add(TenantRecord(tenant_id=f"burst-{n}", plan="gold"), credential)
                await wait_until(lambda token=token: all(r.lookup(token) is not None for r in registries), timeout=5)
                delays.append(time.perf_counter() - started)
            assert max(delays) < 0.1, sorted(delays)
            for _, endpoint in workers:
                assert (await client.post(endpoint, json=initialize(), headers=headers(TOKEN))).status_code == 401
            record = TenantRecord(tenant_id="acme", label="acme", plan="gold")
            started = time.perf_counter()
            await writer.add(record, Credential(digest=writer.digest(TOKEN), tenant_id="acme"))
            await wait_until(lambda: all(r.lookup(TOKEN) is not None for r in registries), timeout=5)
            elapsed = time.perf_counter() - started
            assert elapsed < 0.1, f"in force on every worker after {elapsed * 1000:.1f} ms"

            opened = await client.post(first, json=initialize(), headers=headers(TOKEN))
            assert opened.status_code == 200
            session_id = opened.headers["mcp-session-id"]
            acked = await client.post(
                first, json=notification("notifications/initialized"), headers=headers(TOKEN, session_id)
            )
            assert acked.status_code == 202
            answer = await client.post(
                second, json=call_tool(1, "echo", {"text": "x"}), headers=headers(TOKEN, session_id)
            )
            assert answer.status_code == 200
            assert "gold:x" in answer.text

            async with client.stream("GET", second, headers=headers(TOKEN, session_id)) as stream:
                assert stream.status_code == 200
                await writer.remove("acme", policy="close", drain_timeout=0.0)
                async for _ in stream.aiter_bytes():
                    pass  # the stream ends: the token's sessions end on every worker
            await wait_until(lambda: all(r.lookup(TOKEN) is None for r in registries), timeout=5)
            for endpoint in (first, second):
                refused = await client.post(
                    endpoint, json=call_tool(2, "echo", {"text": "y"}), headers=headers(TOKEN, session_id)
                )
                assert refused.status_code == 401


async def tokens_cli(*args: str, url: str, prefix: str) -> str:
    """`asgi-mcp tokens ...` as a subprocess, with the fleet's secret in its environment; its stdout."""
    command = [*cli_command(), "tokens", *args, "--redis", url, "--prefix", prefix]
    env = dict(os.environ, ASGI_MCP_FLEET_SECRET=SECRET.decode())
    done = await anyio.run_process(command, env=env, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def printed_token(output: str) -> str:
    match = re.search(r"token \(shown once\) (\S+)", output)
    assert match is not None, output
    return match.group(1)


async def test_asgi_mcp_tokens_manages_the_tokens_of_running_workers(
    shared_redis: RedisServer, redis_prefix: str, anyio_backend: str
) -> None:
    def bearer(token: str) -> dict[str, str]:
        return headers() | {"authorization": f"Bearer {token}"}

    with anyio.fail_after(60):
        async with (
            serve_workers(lambda: worker(shared_redis.url, redis_prefix), anyio_backend) as workers,
            httpx.AsyncClient() as client,
        ):
            registries: list[Any] = [app.config.tenants for app, _ in workers]
            added = await tokens_cli(
                "add", "--label", "acme", "--plan", "gold", url=shared_redis.url, prefix=redis_prefix
            )
            first = printed_token(added)
            written = time.perf_counter()
            await wait_until(lambda: all(r.lookup(first) is not None for r in registries), timeout=5)
            assert time.perf_counter() - written < 0.1
            for _, endpoint in workers:
                assert (await client.post(endpoint, json=initialize(), headers=bearer(first))).status_code == 200

            listed = await tokens_cli("list", url=shared_redis.url, prefix=redis_prefix)
            assert "acme\tplan=gold\ttokens=1\texpires=never" in listed
            assert first not in listed

            rotated = await tokens_cli(
                "rotate", "--label", "acme", "--grace", "60", url=shared_redis.url, prefix=redis_prefix
            )
            second = printed_token(rotated)
            await wait_until(lambda: all(r.lookup(second) is not None for r in registries), timeout=5)
            assert all(r.lookup(first) is not None for r in registries)  # within its grace
            assert "tokens=2" in await tokens_cli("list", url=shared_redis.url, prefix=redis_prefix)

            assert "removed acme" in await tokens_cli(
                "remove", "--label", "acme", url=shared_redis.url, prefix=redis_prefix
            )
            await wait_until(lambda: all(r.lookup(second) is None for r in registries), timeout=5)
            for _, endpoint in workers:
                for token in (first, second):
                    assert (await client.post(endpoint, json=initialize(), headers=bearer(token))).status_code == 401


def test_a_mirror_takes_its_tokens_from_the_store_only() -> None:
    store = tenant_store_from_url("redis://127.0.0.1:1/0", secret=SECRET)
    with pytest.raises(ValueError, match="shared store"):
        Tenants({TOKEN: gold}, store=store)
    mirror = Tenants(plans={"gold": gold}, store=store)
    with pytest.raises(ValueError, match="asgi-mcp tokens add"):
        mirror.add(TOKEN, plan="gold")
    assert mirror.lookup(TOKEN) is None
