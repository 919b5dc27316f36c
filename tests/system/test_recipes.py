"""The documented recipes for composing `McpApp` into Starlette and FastAPI run as written.

Each recipe is the fenced Python block after a `<!-- recipe: NAME ... -->` marker in the README or
docs/serving.md. The test executes that text with `mcp` bound to a real `MCPServer`, serves the app
it defines on a real server (uvicorn on asyncio, hypercorn's Trio worker on Trio) and checks over
HTTP what the page promises: the host's route answers, the SDK's client holds a session at `/mcp`,
the bare `/mcp` is not redirected (or is, where the page says so), and forgetting the lifespan gets
the 500 that names `lifespan_context`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Final

import anyio
import httpx
import mcp_types as types
import pytest
from mcp import Client

from tests.kit.mcp_servers import build_server
from tests.kit.messages import LEGACY, MODERN, initialize
from tests.kit.real_servers import hypercorn_trio_server, uvicorn_server

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

ROOT: Final = Path(__file__).resolve().parents[2]
RECIPE: Final = re.compile(r"<!-- recipe: (?P<name>[\w-]+) [^>]*-->\n```python\n(?P<code>.*?)\n```\n", re.DOTALL)
HEADERS: Final = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
GUARD: Final = 30.0

# recipe name -> (the page it is on, the name of the host app it defines)
RECIPES: Final = {
    "readme-fastapi": ("README.md", "api"),
    "fastapi": ("docs/serving.md", "api"),
    "starlette": ("docs/serving.md", "app"),
    "starlette-prefix": ("docs/serving.md", "app"),
}
# The recipes that mount McpApp at the root: its own `/mcp`, bare and with a slash, no redirect.
ROOT_MOUNTED: Final = ["readme-fastapi", "fastapi", "starlette"]


def recipe_code(name: str) -> str:
    page, _ = RECIPES[name]
    found = {match["name"]: match["code"] for match in RECIPE.finditer((ROOT / page).read_text(encoding="utf-8"))}
    assert name in found, f"no `<!-- recipe: {name} -->` block in {page}"
    return found[name]


def run_recipe(name: str, code: str | None = None) -> Any:
    """Execute the recipe (or a variant of its text) with `mcp` bound; return the host app it defines."""
    namespace: dict[str, Any] = {"__name__": f"recipe_{name.replace('-', '_')}", "mcp": build_server()}
    exec(compile(code if code is not None else recipe_code(name), f"<recipe {name}>", "exec"), namespace)
    return namespace[RECIPES[name][1]]


def serve(app: Any, anyio_backend: str) -> AbstractAsyncContextManager[str]:
    return uvicorn_server(app) if anyio_backend == "asyncio" else hypercorn_trio_server(app)


@asynccontextmanager
async def served(name: str, anyio_backend: str, code: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        serve(run_recipe(name, code), anyio_backend) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=10) as http,
    ):
        yield http


def url(http: httpx.AsyncClient, path: str) -> str:
    return str(http.base_url).rstrip("/") + path


def text(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


async def sdk_round_trip(url: str) -> None:
    """A legacy session and a 2026-07-28 call through the SDK's own client."""
    async with Client(url, mode="legacy") as client:
        assert client.protocol_version == LEGACY
        assert "echo" in {tool.name for tool in (await client.list_tools()).tools}
        assert text(await client.call_tool("echo", {"text": "über"})) == "über"
    async with Client(url, mode=MODERN) as client:
        assert client.protocol_version == MODERN
        assert text(await client.call_tool("echo", {"text": "modern"})) == "modern"


@pytest.mark.parametrize("name", ROOT_MOUNTED)
async def test_root_mounted_recipe_serves_the_host_and_mcp(name: str, anyio_backend: str) -> None:
    with anyio.fail_after(GUARD):
        async with served(name, anyio_backend) as http:
            status = await http.get("/status")
            assert status.status_code == 200
            assert status.json() == {"status": "up"}
            for path in ("/mcp", "/mcp/"):
                init = await http.post(path, json=initialize(), headers=HEADERS)  # httpx does not follow
                assert init.status_code == 200, (path, init.status_code, init.headers.get("location"))
                assert "mcp-session-id" in init.headers
            assert (await http.post("/elsewhere", json=initialize(), headers=HEADERS)).status_code == 404
            await sdk_round_trip(url(http, "/mcp"))


async def test_prefix_recipe_redirects_the_bare_path_as_documented(anyio_backend: str) -> None:
    with anyio.fail_after(GUARD):
        async with served("starlette-prefix", anyio_backend) as http:
            bare = await http.post("/mcp", json=initialize(), headers=HEADERS)
            assert bare.status_code == 307
            assert bare.headers["location"].endswith("/mcp/")
            assert (await http.post("/mcp/", json=initialize(), headers=HEADERS)).status_code == 200
            # "The SDK's client follows it": the bare URL works for the SDK, the slashed one for everyone.
            await sdk_round_trip(url(http, "/mcp"))
            await sdk_round_trip(url(http, "/mcp/"))


@pytest.mark.parametrize("name", list(RECIPES))
async def test_forgetting_the_lifespan_gets_the_documented_500(
    name: str, anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    forgotten, removed = re.subn(r"lifespan=lifespan,?", "", recipe_code(name))
    assert removed == 1, "the recipe passes its lifespan to the host exactly once"
    path = "/mcp/" if name == "starlette-prefix" else "/mcp"
    with caplog.at_level(logging.ERROR, logger="asgi_mcp"), anyio.fail_after(GUARD):
        async with served(name, anyio_backend, forgotten) as http:
            for _ in range(2):
                response = await http.post(path, json=initialize(), headers=HEADERS)
                assert response.status_code == 500
                assert "lifespan_context" in response.json()["error"]["message"]
    logged = [r for r in caplog.records if r.name == "asgi_mcp" and r.levelno == logging.ERROR]
    assert len(logged) == 1, "logged once, not per request"
    assert "lifespan_context" in logged[0].getMessage()
