"""The app tests/test_servers.py serves with `granian --interface asgi tests._granian_app:app`.

granian imports the app in its own worker process, so the test's options come through the
environment (`OPTIONS_ENV`, JSON: McpApp's own options, plus `event_store`: true for an
`InMemoryEventStore` or `{"redis": URL, "prefix": P}` for a `RedisEventStore`). The test's `Probe`
lives here: the `await_cancelled` tool reports what the in-process tests read from the probe
directly, and the `release` tool sets what they set.
"""

from __future__ import annotations

import json
import os
from typing import Any, Final

import asgi_mcp
from asgi_mcp import InMemoryEventStore, McpApp

from ._servers import Probe, build_server

OPTIONS_ENV: Final = "ASGI_MCP_TEST_GRANIAN_OPTIONS"


def _build() -> McpApp:
    options: dict[str, Any] = json.loads(os.environ.get(OPTIONS_ENV, "{}"))
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
