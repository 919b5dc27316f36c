"""The app tests/system/test_servers.py serves with `granian --interface asgi tests.kit.granian_app:app`.

granian imports the app in its own worker process, so the test's options come through the
environment (`OPTIONS_ENV`, JSON: McpApp's own options, plus `event_store`: true for an
`InMemoryEventStore` or `{"redis": URL, "prefix": P}` for a `RedisEventStore`; `interop`: true for
the TypeScript client's app instead, built with the other options). The test's `Probe`
lives here: the `await_cancelled` tool reports what the in-process tests read from the probe
directly, and the `release` tool sets what they set.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Final

import asgi_mcp
from asgi_mcp import InMemoryEventStore, McpApp

from .mcp_servers import Probe, build_server

OPTIONS_ENV: Final = "ASGI_MCP_TEST_GRANIAN_OPTIONS"


INTEROP: Final = Path(__file__).resolve().parents[1] / "interop"


def _build() -> McpApp:
    options: dict[str, Any] = json.loads(os.environ.get(OPTIONS_ENV, "{}"))
    if options.pop("interop", False):  # the TypeScript client's app (tests/interop/test_ts_client.py)
        sys.path.insert(0, str(INTEROP))  # where pytest finds it (rootdir-relative, no package)
        from test_ts_client import build_app  # type: ignore[import-not-found]

        built: McpApp = build_app(**options)
        return built
    store = options.pop("event_store", False)
    if isinstance(store, dict):
        options["event_store"] = asgi_mcp.RedisEventStore(store["redis"], prefix=store["prefix"])
    elif store:
        options["event_store"] = InMemoryEventStore()
    probe = Probe()  # anyio Events made outside a loop bind to granian's loop on first use
    mcp = build_server(probe)

    @mcp.tool()
    async def await_cancelled() -> str:
        """Waits until the `block` tool's handler was cancelled; says what it had recorded."""
        await probe.cancelled.wait()
        return f"cancelled results={probe.results}"

    @mcp.tool()
    def release() -> str:
        """Lets the tools that wait for the probe's `release` go on."""
        probe.release.set()
        return "released"

    return McpApp(mcp, **options)


app = _build()
