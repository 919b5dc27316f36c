"""Interop: real MCP clients reach each demo token's own tools through `asgi-mcp demo`.

`asgi-mcp demo` runs as a subprocess on a free port (asyncio, and `--trio` for the trio run); the
TypeScript SDK 1.32.2 client (tests/interop/client.mjs) and the MCP Inspector CLI 1.0.3 connect with
each demo token's `Authorization: Bearer` header, list the tools and call them.

    pytest -p anyio tests/interop/test_demo_clients.py -q
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import anyio
import pytest
from node_env import NodeEnv

from asgi_mcp._serving.demo import PLANS, Plan
from tests.kit.cli import running_cli
from tests.kit.processes import ProcessRun

pytestmark = [pytest.mark.node, pytest.mark.integration]

CLIENT: Final = Path(__file__).resolve().parent / "client.mjs"
NODE_TIMEOUT: Final = 60.0
# One plan-specific call per demo token, besides `echo` which every plan has.
CALLS: Final[dict[str, tuple[str, dict[str, Any], str]]] = {
    "free": ("hello", {"name": "ts"}, "Hello, ts!"),
    "pro": ("word_count", {"text": "one two three"}, "3"),
    "admin": ("list_tenants", {}, "free"),
}


async def node(env: NodeEnv, args: list[str], *, cwd: Path | None = None) -> tuple[int, str, str]:
    with anyio.fail_after(NODE_TIMEOUT):
        proc = await anyio.run_process([env.node, *args], cwd=cwd, env=env.env(), check=False)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


async def inspector(env: NodeEnv, url: str, token: str, *method: str) -> tuple[int, str, str]:
    # The Inspector CLI looks for its package.json relative to the working directory but imports
    # it relative to its module: run it from its build directory so both agree.
    args = [str(env.inspector_cli), url, "--transport", "http", "--header", f"Authorization: Bearer {token}"]
    return await node(env, [*args, "--method", *method], cwd=env.inspector_cli.parent)


def first_text(result: dict[str, Any]) -> str:
    return str(result["content"][0]["text"])


async def check_ts_client(env: NodeEnv, url: str, plan: Plan) -> None:
    tool, arguments, expected = CALLS[plan.label]
    args = [str(CLIENT), url, "echo", json.dumps({"text": plan.label}), tool, json.dumps(arguments)]
    code, out, err = await node(env, [*args, "--token", plan.token])
    assert code == 0, f"{out}\n{err}"
    events = [json.loads(line) for line in out.splitlines()]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_type.setdefault(event["type"], []).append(event)
    assert "error" not in by_type, out
    [connected] = by_type["connected"]
    assert connected["serverVersion"]["name"] == f"asgi-mcp-demo-{plan.label}"
    assert connected["protocolVersion"] == "2025-11-25"
    [tools] = by_type["tools"]
    assert sorted(tools["names"]) == sorted(plan.tools)
    results = {event["tool"]: event["result"] for event in by_type["result"]}
    assert first_text(results["echo"]) == plan.label
    assert expected in first_text(results[tool])
    assert "terminated" in by_type, out


async def check_inspector(env: NodeEnv, url: str, plan: Plan) -> None:
    code, out, err = await inspector(env, url, plan.token, "tools/list")
    assert code == 0, f"{out}\n{err}"
    assert sorted(tool["name"] for tool in json.loads(out)["tools"]) == sorted(plan.tools)

    tool, arguments, expected = CALLS[plan.label]
    tool_args = [item for name, value in arguments.items() for item in ("--tool-arg", f"{name}={value}")]
    code, out, err = await inspector(env, url, plan.token, "tools/call", "--tool-name", tool, *tool_args)
    assert code == 0, f"{out}\n{err}"
    result = json.loads(out)
    assert result["isError"] is False, out
    assert expected in first_text(result)


async def demo_url(run: ProcessRun) -> str:
    await run.wait_for(lambda out: "Press Ctrl-C to stop." in out)
    return await run.url()


@pytest.mark.anyio
async def test_ts_sdk_client_reaches_each_tokens_tools(anyio_backend: str, node_env: NodeEnv) -> None:
    async with running_cli(["demo", "--port", "0", *(["--trio"] if anyio_backend == "trio" else [])]) as run:
        url = await demo_url(run)
        for plan in PLANS:
            await check_ts_client(node_env, url, plan)
        assert await run.stop() == 0, str(run)


@pytest.mark.anyio
async def test_inspector_cli_reaches_each_tokens_tools(anyio_backend: str, node_env: NodeEnv) -> None:
    async with running_cli(["demo", "--port", "0", *(["--trio"] if anyio_backend == "trio" else [])]) as run:
        url = await demo_url(run)
        for plan in PLANS:
            await check_inspector(node_env, url, plan)

        # Another token's tool is not there; an unknown token does not connect.
        code, out, _ = await inspector(node_env, url, "demo-free-token", "tools/call", "--tool-name", "list_tenants")
        assert code == 0, out
        assert json.loads(out)["isError"] is True, out
        code, out, err = await inspector(node_env, url, "demo-nobody-token", "tools/list")
        assert code != 0
        assert "invalid_token" in out + err
        assert await run.stop() == 0, str(run)
