from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.kit.processes import not_installed
from tests.kit.redis_server import RedisServer, RedisUnavailable, redis_server_binary


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


def _require_redis_server() -> None:
    """Skip without redis-server on a developer machine; under CI (`CI` set) its absence is a failure."""
    try:
        redis_server_binary()
    except RedisUnavailable as missing:
        not_installed(str(missing))


@pytest.fixture(scope="session")
def require_redis_server() -> None:
    """For code that starts a redis-server of its own (the fleet benchmark): skip, or under CI fail, without one."""
    _require_redis_server()


RedisServerFactory = Callable[..., RedisServer]


@pytest.fixture
def redis_server_factory(tmp_path: Path) -> Iterator[RedisServerFactory]:
    """Start real redis-servers of the test's own (`persistent=True`, `password=...` as asked); all are
    stopped at teardown. Each has `stop()`, `kill()`, `start()` (same port) and `restart()`."""
    _require_redis_server()
    servers: list[RedisServer] = []

    def start(*, persistent: bool = False, password: str | None = None) -> RedisServer:
        directory = tmp_path / f"redis-{len(servers)}"
        directory.mkdir()
        server = RedisServer(directory, persistent=persistent, password=password)
        servers.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.close()


@pytest.fixture
def redis_server(redis_server_factory: RedisServerFactory) -> RedisServer:
    """A redis-server of this test's own, free to stop and restart (failure tests)."""
    return redis_server_factory()


@pytest.fixture(scope="session")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session's tests that never stop it; each test keys under its own
    prefix (`redis_prefix`), so none sees another's data."""
    _require_redis_server()
    server = RedisServer(tmp_path_factory.mktemp("redis-shared"))
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix unique to this test (and parameter set)."""
    return "t" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:16]
