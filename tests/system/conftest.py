"""Fixtures the system tests share."""

from __future__ import annotations

import pytest

from tests.kit.real_servers import SERVERS


@pytest.fixture(params=sorted(SERVERS))
def server_name(request: pytest.FixtureRequest, anyio_backend: str) -> str:
    """Each in-process real server (`tests.kit.real_servers.SERVERS`), on the backend it serves on."""
    name: str = request.param
    if anyio_backend != SERVERS[name][0]:
        pytest.skip(f"{name} serves on {SERVERS[name][0]} only")
    return name
