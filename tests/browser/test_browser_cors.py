"""A real browser as the MCP client: the TypeScript SDK in headless Chromium, across origins.

The official TypeScript SDK (`@modelcontextprotocol/sdk` 1.32.2: `Client` and
`StreamableHTTPClientTransport`) is bundled by esbuild into one browser ES module. A tiny static
ASGI site serves a page and that module from one origin (`http://127.0.0.1:PORT_A`); the page
connects with a bearer token to `McpApp` on another origin (`http://localhost:PORT_B/mcp`: another
host name and another port), lists the tools, calls one, ends its session, and writes the outcome
into the DOM and `document.title`. Headless Chromium loads the page with `--dump-dom` (after a
virtual-time budget) and the test reads the outcome from the printed DOM. Virtual time does not
wait for a streamed (SSE) response body, so the page keeps one request to its own site (`/hold`)
open until it is done: virtual time then waits for the real network.

Every header the SDK sends (`Authorization`, `Mcp-Session-Id`, `MCP-Protocol-Version`, ...) makes
the browser preflight, and the SDK can only keep its session if `Mcp-Session-Id` is exposed: the
page succeeds only if McpApp's CORS is right. The same page loaded from an origin not in
`cors_origins` must fail, as a browser enforces it.

Both sites run in the test's event loop: uvicorn on asyncio, hypercorn's Trio worker on Trio. npm
packages go to `${ASGI_MCP_NODE_CACHE:-~/.cache/asgi-mcp-node}/browser` (installed once, with
`--ignore-scripts`: esbuild's binary comes in its optional platform package, no install script
needed), the bundle is built there once. Chromium is Debian's `chromium` (skipped when absent).

    pytest -p anyio tests/browser -q -m browser
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

import anyio
import pytest
from mcp.server import MCPServer
from mcp.server.mcpserver import Context

from asgi_mcp import McpApp, Tenants
from tests.interop.node_env import NodeUnavailable, _install_lock, _installed_version, _which, cache_dir
from tests.kit.polling import Recorder
from tests.kit.real_servers import hypercorn_trio_server, uvicorn_server

pytestmark = [pytest.mark.node, pytest.mark.integration, pytest.mark.browser]

SDK_VERSION: Final = "1.32.2"
ESBUILD_VERSION: Final = "0.28.2"
PACKAGES: Final = {"@modelcontextprotocol/sdk": SDK_VERSION, "esbuild": ESBUILD_VERSION}
BUNDLE_NAME: Final = f"mcp-sdk-{SDK_VERSION}.browser.js"
NPM_TIMEOUT: Final = 600.0
CHROMIUM: Final = "/usr/bin/chromium"
CHROMIUM_FLAGS: Final = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
VIRTUAL_TIME_BUDGET_MS: Final = 60_000  # virtual time: it stands still while a fetch is pending
BROWSER_TIMEOUT: Final = 90.0  # real seconds for one Chromium run
TOKEN: Final = "browser-secret-token-2Hq7Vx"
ECHO_TEXT: Final = "héllo from the browser ✓ <&>"
SERVER_NAME: Final = "asgi-mcp-browser"

ENTRY: Final = """\
export { Client } from '@modelcontextprotocol/sdk/client/index.js';
export { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
"""

PAGE: Final = f"""\
<!doctype html>
<html>
<head><meta charset="utf-8"><title>pending</title></head>
<body>
<pre id="outcome">pending</pre>
<script type="module">
import {{ Client, StreamableHTTPClientTransport }} from './{BUNDLE_NAME}';

const params = new URLSearchParams(location.search);
const report = (status, details) => {{
  document.getElementById('outcome').textContent = JSON.stringify({{ status, ...details }});
  document.title = status;
}};
// Chromium's virtual time stands still only while a fetch waits for its response headers, not
// while a streamed (SSE) body arrives: this request to the page's own site stays open until the
// page is done, so virtual time (and the SDK's request timeouts) wait for the real network.
const hold = fetch('./hold', {{ cache: 'no-store' }});
try {{
  const transport = new StreamableHTTPClientTransport(new URL(params.get('mcp')), {{
    requestInit: {{ headers: {{ Authorization: `Bearer ${{params.get('token')}}` }} }},
  }});
  const client = new Client({{ name: 'asgi-mcp-browser-test', version: '1.0.0' }});
  await client.connect(transport);
  const sessionId = transport.sessionId;
  const protocolVersion = transport.protocolVersion;
  const server = client.getServerVersion();
  const tools = (await client.listTools()).tools.map((tool) => tool.name).sort();
  const result = await client.callTool({{ name: 'echo', arguments: {{ text: params.get('text') }} }});
  await transport.terminateSession();
  await client.close();
  report('done', {{ sessionId, protocolVersion, server, tools, result, origin: location.origin }});
}} catch (error) {{
  report('failed', {{ error: String(error), origin: location.origin }});
}} finally {{
  await fetch('./release', {{ method: 'POST' }});
  await hold;
}}
</script>
</body>
</html>
"""


# -- the bundle -----------------------------------------------------------------------------------


def _npm_install(root: Path) -> None:
    node_modules = root / "node_modules"
    missing = [f"{n}@{v}" for n, v in PACKAGES.items() if _installed_version(node_modules, n) != v]
    if not missing:
        return
    npm = _which("npm")
    manifest = root / "package.json"
    if not manifest.exists():
        manifest.write_text(json.dumps({"name": "asgi-mcp-browser", "private": True, "type": "module"}) + "\n")
    # No install scripts: esbuild's binary is in its optional `@esbuild/<platform>` dependency.
    cmd = [npm, "install", "--no-audit", "--no-fund", "--save-exact", "--ignore-scripts", *missing]
    try:
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=NPM_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:
        raise NodeUnavailable(f"`{' '.join(cmd)}` timed out in {root}") from exc
    still = [n for n, v in PACKAGES.items() if _installed_version(node_modules, n) != v]
    if proc.returncode != 0 or still:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise NodeUnavailable(f"`{' '.join(cmd)}` in {root} failed (exit {proc.returncode}): {still}\n{tail}")


def build_bundle() -> bytes:
    """The SDK client as one browser ES module (built once into the cache, then reused)."""
    node = _which("node")
    root = cache_dir().parent / "browser"
    bundle = root / f"{BUNDLE_NAME}.esbuild-{ESBUILD_VERSION}"
    root.mkdir(parents=True, exist_ok=True)
    with _install_lock(root):
        if not bundle.exists():
            _npm_install(root)
            entry = root / "entry.mjs"
            entry.write_text(ENTRY, encoding="utf-8")
            esbuild = root / "node_modules" / "esbuild" / "bin" / "esbuild"
            partial = bundle.with_name(bundle.name + ".partial")
            cmd = [
                node,
                str(esbuild),
                str(entry),
                "--bundle",
                "--format=esm",
                "--platform=browser",
                "--target=es2022",
                "--log-level=warning",
                f"--outfile={partial}",
            ]
            proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=120, check=False)
            if proc.returncode != 0 or not partial.exists():
                raise NodeUnavailable(f"esbuild failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
            partial.replace(bundle)
    return bundle.read_bytes()


@pytest.fixture(scope="session")
def bundle() -> bytes:
    try:
        return build_bundle()
    except NodeUnavailable as exc:
        pytest.fail(f"the browser test needs Node.js, npm and the pinned npm packages: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def chromium() -> str:
    path = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if path is None:
        pytest.skip("headless Chromium is not installed (Debian: `apt-get install -y chromium`)")
    return path


# -- the two sites --------------------------------------------------------------------------------


@dataclass
class StaticSite:
    """A tiny static ASGI site: the page and the bundle; it records what it served."""

    files: dict[str, tuple[bytes, bytes]]
    served: list[tuple[str, int]] = field(default_factory=list)
    released: anyio.Event = field(default_factory=anyio.Event)

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["path"] == "/hold":  # answered once the page POSTs /release (see PAGE)
            released = self.released
            with anyio.move_on_after(BROWSER_TIMEOUT):
                await released.wait()
            self.served.append(("/hold", 204))
            await send({"type": "http.response.start", "status": 204, "headers": [(b"cache-control", b"no-store")]})
            await send({"type": "http.response.body", "body": b""})
            return
        if scope["path"] == "/release" and scope["method"] == "POST":
            self.released.set()
            self.released = anyio.Event()
            self.served.append(("/release", 204))
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        found = self.files.get(scope["path"]) if scope["method"] in ("GET", "HEAD") else None
        body, content_type = found if found is not None else (b"not found", b"text/plain")
        status = 200 if found is not None else 404
        self.served.append((scope["path"], status))
        headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body if scope["method"] == "GET" else b""})


def build_server() -> MCPServer:
    mcp = MCPServer(SERVER_NAME, version="3.1.4")

    @mcp.tool()
    def echo(text: str, ctx: Context) -> str:
        """Return `text`, noting whether the request carried a bearer token (never the token)."""
        headers = ctx.headers or {}
        return f"{text} | authorization: {'present' if headers.get('authorization') else 'absent'}"

    @mcp.tool()
    def add(a: int, b: int) -> int:
        return a + b

    return mcp


SERVE: Final[dict[str, Callable[[Any], AbstractAsyncContextManager[str]]]] = {
    "asyncio": uvicorn_server,
    "trio": hypercorn_trio_server,
}


# -- the browser ----------------------------------------------------------------------------------


@dataclass
class PageRun:
    returncode: int | None
    dom: str
    stderr: str

    @property
    def title(self) -> str | None:
        match = re.search(r"<title>(.*?)</title>", self.dom, re.S)
        return html.unescape(match.group(1)) if match else None

    @property
    def outcome(self) -> dict[str, Any]:
        match = re.search(r'<pre id="outcome">(.*?)</pre>', self.dom, re.S)
        assert match is not None, str(self)
        try:
            return dict(json.loads(html.unescape(match.group(1))))
        except ValueError:
            raise AssertionError(f"the page wrote no outcome:\n{self}") from None

    def __str__(self) -> str:
        return f"exit {self.returncode}\n--- DOM\n{self.dom}\n--- stderr (tail)\n{self.stderr[-3000:]}"


async def load_page(chromium: str, url: str) -> PageRun:
    """Headless Chromium prints the page's DOM once its virtual-time budget ran out."""
    with tempfile.TemporaryDirectory(prefix="asgi-mcp-chromium-") as profile:
        cmd = [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}",
            "--dump-dom",
            url,
        ]
        # Its own process group: on a timeout the browser and every helper process it started go.
        process = await anyio.open_process(cmd, start_new_session=True)
        stdout, stderr = bytearray(), bytearray()
        try:
            with anyio.fail_after(BROWSER_TIMEOUT):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_drain, process.stdout, stdout)
                    tg.start_soon(_drain, process.stderr, stderr)
                    await process.wait()
        finally:
            if process.returncode is None:
                os.killpg(process.pid, signal.SIGKILL)
                with anyio.CancelScope(shield=True):
                    await process.wait()
            await process.aclose()
    return PageRun(process.returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace"))


async def _drain(stream: Any, into: bytearray) -> None:
    async for chunk in stream:
        into.extend(chunk)


def page_url(page_base: str, mcp_url: str, *, host: str | None = None) -> str:
    parts = urlsplit(page_base)
    netloc = f"{host}:{parts.port}" if host is not None else parts.netloc
    query = urlencode({"mcp": mcp_url, "token": TOKEN, "text": ECHO_TEXT})
    return f"{parts.scheme}://{netloc}/index.html?{query}"


@asynccontextmanager
async def two_origins(backend: str, bundle: bytes) -> AsyncIterator[tuple[StaticSite, str, McpApp, str]]:
    """The static site on 127.0.0.1:PORT_A, McpApp (tenants, CORS for that origin) on localhost:PORT_B."""
    site = StaticSite(
        {
            "/index.html": (PAGE.encode(), b"text/html; charset=utf-8"),
            f"/{BUNDLE_NAME}": (bundle, b"text/javascript; charset=utf-8"),
        }
    )
    serve = SERVE[backend]
    async with serve(site) as page_base:
        page_origin = page_base.rstrip("/")
        # `allowed_origins=[]`: no origin passes the DNS-rebinding check by default (not even a
        # loopback one); the CORS origin passes because it is a CORS origin.
        app = McpApp(
            tenants=Tenants({TOKEN: build_server}), cors_origins=[page_origin], allowed_origins=[], shutdown_timeout=1
        )
        async with serve(app) as mcp_base:
            yield site, page_origin, app, f"http://localhost:{urlsplit(mcp_base).port}/mcp"


# -- tests ----------------------------------------------------------------------------------------


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """asyncio serves both sites on uvicorn, trio on hypercorn's Trio worker."""
    return str(request.param)


@pytest.mark.anyio
async def test_browser_client_on_another_origin(anyio_backend: str, bundle: bytes, chromium: str) -> None:
    async with two_origins(anyio_backend, bundle) as (site, page_origin, app, mcp_url):
        recorder = Recorder(app)
        run = await load_page(chromium, page_url(page_origin, mcp_url))
        assert run.title == "done", str(run)
        await recorder.wait_for("session_ended")

    outcome = run.outcome
    assert outcome["status"] == "done", str(run)
    assert outcome["origin"] == page_origin
    assert urlsplit(mcp_url).netloc != urlsplit(page_origin).netloc  # really another origin
    # The SDK read Mcp-Session-Id from the answer: only possible when the header is exposed.
    assert isinstance(outcome["sessionId"], str)
    assert outcome["sessionId"]
    assert outcome["protocolVersion"] == "2025-11-25"
    assert outcome["server"] == {"name": SERVER_NAME, "version": "3.1.4"}
    assert outcome["tools"] == ["add", "echo"]
    result = outcome["result"]
    assert result["isError"] is False, result
    assert result["content"] == [{"type": "text", "text": f"{ECHO_TEXT} | authorization: present"}]

    assert ("/index.html", 200) in site.served
    assert (f"/{BUNDLE_NAME}", 200) in site.served
    # The server saw the same session, the tool call, and the page's DELETE ending it.
    [created] = recorder.of("session_created")
    assert created.session_id == outcome["sessionId"]
    [called] = recorder.of("tool_called")
    assert (called.tool_name, called.success) == ("echo", True)
    [ended] = recorder.of("session_ended")
    assert (ended.session_id, ended.reason) == (outcome["sessionId"], "deleted")
    assert TOKEN not in run.dom.replace(page_url(page_origin, mcp_url), "")  # not echoed back anywhere


@pytest.mark.anyio
async def test_a_page_from_an_origin_not_in_cors_origins_is_blocked(
    anyio_backend: str, bundle: bytes, chromium: str
) -> None:
    """The same page from `localhost:PORT_A` (CORS allows only `127.0.0.1:PORT_A`): the browser refuses."""
    async with two_origins(anyio_backend, bundle) as (site, page_origin, app, mcp_url):
        recorder = Recorder(app)
        run = await load_page(chromium, page_url(page_origin, mcp_url, host="localhost"))

    assert run.title == "failed", str(run)
    outcome = run.outcome
    assert outcome["origin"] == page_origin.replace("127.0.0.1", "localhost")
    assert "fetch" in outcome["error"].lower(), outcome  # TypeError: Failed to fetch
    assert (f"/{BUNDLE_NAME}", 200) in site.served  # the page itself did load
    assert recorder.of("session_created") == []
