"""The `asgi-mcp` command as a subprocess: `serve MODULE:ATTR` and the multi-tenant `demo`.

The subprocess runs on the test's backend (`--trio` for the trio run) and binds port 0; the tests
read the real URL from its output and stop it with SIGINT, as Ctrl-C does.
"""

from __future__ import annotations

import socket
import subprocess
from typing import Final

import httpx
import pytest

from asgi_mcp._serving.demo import PLANS
from tests.kit.cli import REPO, command, running_cli
from tests.kit.http import HttpSession, answer_of, headers, open_session
from tests.kit.messages import initialize
from tests.kit.redis_server import RedisServer

pytestmark = pytest.mark.integration

TARGETS: Final = [
    ("tests.kit.cli_targets:mcp", "cli-mcpserver", "/mcp"),
    ("tests.kit.cli_targets:lowlevel", "cli-lowlevel", "/mcp"),
    ("tests.kit.cli_targets:app", "cli-app", "/custom"),
    ("tests.kit.cli_targets:factory", "cli-factory", "/mcp"),
    ("tests.kit.cli_targets:async_app_factory", "cli-async-factory", "/custom"),
]


def backend_flags(anyio_backend: str) -> list[str]:
    return ["--trio"] if anyio_backend == "trio" else []


@pytest.mark.anyio
@pytest.mark.parametrize(("target", "server_name", "path"), TARGETS, ids=[t[0].split(":")[1] for t in TARGETS])
async def test_serve_target(anyio_backend: str, target: str, server_name: str, path: str) -> None:
    args = ["serve", target, "--port", "0", "--log-level", "warning", *backend_flags(anyio_backend)]
    async with running_cli(args) as run, httpx.AsyncClient() as client:
        url = await run.url()
        assert url.endswith(path)
        session = await open_session(client, url, None)
        assert session.server_name == server_name
        assert await session.tool_names() == ["ping"]
        assert await run.stop() == 0, str(run)
    assert "asgi-mcp: stopping" in run.stdout


@pytest.mark.anyio
async def test_serve_json_response_and_access_log(anyio_backend: str) -> None:
    args = ["serve", "tests.kit.cli_targets:mcp", "--port", "0", "--json-response", *backend_flags(anyio_backend)]
    async with running_cli(args) as run, httpx.AsyncClient() as client:
        url = await run.url()
        response = await client.post(url, json=initialize(), headers=headers())
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/json")
        assert answer_of(response)["result"]["serverInfo"]["name"] == "cli-mcpserver"
        assert await run.stop() == 0, str(run)
    # --log-level info (the default) shows hypercorn's access log through the `asgi_mcp.access` logger.
    assert "asgi_mcp.access" in run.stderr
    assert "POST /mcp" in run.stderr


PLAIN_TARGETS: Final = [
    "tests.kit.cli_targets:plain",
    "tests.kit.cli_targets:plain_factory",
    "tests.kit.cli_targets:starlette",
]


@pytest.mark.anyio
@pytest.mark.parametrize("server", ["builtin", "hypercorn"])
@pytest.mark.parametrize("target", PLAIN_TARGETS, ids=[t.split(":")[1] for t in PLAIN_TARGETS])
async def test_serve_any_asgi_app_with_its_lifespan(anyio_backend: str, target: str, server: str) -> None:
    args = ["serve", target, "--port", "0", "--server", server, "--log-level", "warning", *backend_flags(anyio_backend)]
    async with running_cli(args) as run, httpx.AsyncClient() as client:
        url = await run.url()
        response = await client.get(url + "some/path")
        assert response.status_code == 200
        assert response.text == "started by the lifespan GET /some/path"
        assert await run.stop() == 0, str(run)
    assert "plain app: lifespan shutdown" in run.stdout


@pytest.mark.anyio
@pytest.mark.parametrize(("loop", "expected"), [("auto", "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio")])
async def test_serve_runs_on_uvloop_when_installed_unless_told_otherwise(
    anyio_backend: str, loop: str, expected: str
) -> None:
    # uvloop is installed with the test dependencies; the command runs on asyncio (no --trio).
    args = ["serve", "tests.kit.cli_targets:loop_report", "--port", "0", "--loop", loop, "--log-level", "warning"]
    async with running_cli(args) as run, httpx.AsyncClient() as client:
        response = await client.get(await run.url())
        assert response.text.split(".")[0] == expected
        assert await run.stop() == 0, str(run)


@pytest.mark.parametrize("target", ["tests.kit.cli_targets:mcp", "tests.kit.cli_targets:plain"])
@pytest.mark.parametrize("flags", [[], ["--trio"], ["--server", "hypercorn"]], ids=["builtin", "trio", "hypercorn"])
def test_serve_on_a_taken_port_is_an_error_not_a_traceback(target: str, flags: list[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        proc = subprocess.run(
            [*command(), "serve", target, "--port", port, *flags], cwd=REPO, capture_output=True, text=True, timeout=60
        )
    assert proc.returncode == 1, proc
    assert proc.stderr.startswith("asgi-mcp: error:"), proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "tests.kit.cli_targets:not_a_server"], "expected an McpApp"),
        (["serve", "tests.kit.cli_targets:missing"], "has no attribute"),
        (["serve", "tests.no_such_module:app"], "cannot import"),
        (["serve", "no-colon"], "MODULE:ATTR"),
        (["serve", "tests.kit.cli_targets:app", "--path", "/x"], "set them on the McpApp"),
        (["serve", "tests.kit.cli_targets:plain", "--json-response"], "set them on the app"),
        (["serve", "tests.kit.cli_targets:plain", "--trio", "--loop", "uvloop"], "does not go with --trio"),
    ],
)
def test_serve_usage_errors(args: list[str], message: str) -> None:
    proc = subprocess.run([*command(), *args, "--port", "0"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.anyio
async def test_demo_prints_configs_and_serves_three_tenants(anyio_backend: str) -> None:
    async with running_cli(["demo", "--port", "0", *backend_flags(anyio_backend)]) as run:
        await run.wait_for(lambda out: "Press Ctrl-C to stop." in out)
        url = await run.url()
        assert url.endswith("/mcp")

        # Per token: a VS Code mcp.json and a Claude Desktop configuration carrying its bearer header.
        blocks = run.json_blocks()
        assert len(blocks) == 2 * len(PLANS)
        for plan, vscode, claude in zip(PLANS, blocks[0::2], blocks[1::2], strict=True):
            [(name, entry)] = vscode["servers"].items()
            assert name == f"asgi-mcp-{plan.label}"
            assert entry == {"type": "http", "url": url, "headers": {"Authorization": f"Bearer {plan.token}"}}
            [desktop] = claude["mcpServers"].values()
            assert url in desktop["args"]
            assert desktop["env"]["AUTH_HEADER"] == f"Bearer {plan.token}"

        async with httpx.AsyncClient() as client:
            tool_sets = []
            for plan in PLANS:
                session = await open_session(client, url, plan.token)
                assert session.server_name == f"asgi-mcp-demo-{plan.label}"
                tools = await session.tool_names()
                assert tools == sorted(plan.tools)
                tool_sets.append(tuple(tools))
                assert await session.call_tool("echo", {"text": plan.label}) == plan.label
            assert len(set(tool_sets)) == len(PLANS), "each token has its own tools"
            free = await open_session(client, url, "demo-free-token")
            assert await free.call_tool("hello", {"name": "asgi"}) == "Hello, asgi!"
            admin = await open_session(client, url, "demo-admin-token")
            assert "registered_tokens" in await admin.call_tool("server_stats")
            unknown = await client.post(url, json=initialize(), headers=headers("demo-nobody-token"))
            assert unknown.status_code == 401
        await run.wait_for(lambda out: "[admin] server_stats: ok" in out)
        assert await run.stop() == 0, str(run)
    # Outside the banner, the console names tenants by label only.
    after_banner = run.stdout.split("Press Ctrl-C to stop.", 1)[1]
    assert "demo-" not in after_banner.replace("asgi-mcp-demo-", "")
    assert "session ended (shutdown)" in after_banner


def test_help_lists_both_commands() -> None:
    proc = subprocess.run([*command(), "--help"], capture_output=True, text=True, timeout=60, check=True)
    assert "serve" in proc.stdout
    assert "demo" in proc.stdout


@pytest.mark.anyio
async def test_demo_workers_share_sessions_through_redis(anyio_backend: str, redis_server: RedisServer) -> None:
    """`asgi-mcp demo --redis URL`, twice: a session opened on one worker is served by the other, and
    its DELETE on the other ends it on both."""
    args = ["demo", "--port", "0", "--redis", redis_server.url, *backend_flags(anyio_backend)]
    async with running_cli(args) as first_run, running_cli(args) as second_run:
        first, second = await first_run.url(), await second_run.url()
        async with httpx.AsyncClient() as client:
            session = await open_session(client, first, "demo-pro-token")
            elsewhere = HttpSession(client, second, "demo-pro-token")
            elsewhere.session_id = session.session_id
            assert await elsewhere.call_tool("echo", {"text": "moved"}) == "moved"
            deleted = await client.delete(second, headers=headers("demo-pro-token", session.session_id))
            assert deleted.status_code == 200
            again = await client.post(
                first,
                json={"jsonrpc": "2.0", "id": 3, "method": "tools/list"},
                headers=headers("demo-pro-token", session.session_id),
            )
            assert again.status_code == 404
        assert await first_run.stop() == 0, str(first_run)
        assert await second_run.stop() == 0, str(second_run)
