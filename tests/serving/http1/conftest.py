"""The built-in server's tests run on asyncio's own loop, on uvloop (which `asgi-mcp` uses on asyncio
when installed) and on Trio."""

from __future__ import annotations

from typing import Any

import pytest

BACKENDS = {"asyncio": "asyncio", "uvloop": ("asyncio", {"use_uvloop": True}), "trio": "trio"}


@pytest.fixture(params=list(BACKENDS), ids=list(BACKENDS))
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return BACKENDS[request.param]
