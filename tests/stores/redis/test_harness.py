"""The redis-server harness the Redis tests stand on: it starts, stops and restarts a real server, and a
missing redis-server is a skip on a developer machine but a failure under CI."""

from __future__ import annotations

import socket

import pytest

from tests import conftest
from tests.kit.redis_server import RedisServer


def ping(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(64)


def test_start_stop_restart_on_the_same_port(redis_server: RedisServer) -> None:
    port = redis_server.port
    assert port is not None
    assert ping(port) == b"+PONG\r\n"
    redis_server.stop()
    assert not redis_server.running
    with pytest.raises(ConnectionRefusedError):
        ping(port)
    redis_server.start()
    assert redis_server.port == port
    assert ping(port) == b"+PONG\r\n"


def test_a_password_is_required_when_set(redis_server_factory: conftest.RedisServerFactory) -> None:
    server = redis_server_factory(password="s3cret")
    assert server.port is not None
    assert ping(server.port).startswith(b"-NOAUTH")
    assert server.url.startswith("redis://:s3cret@127.0.0.1:")


@pytest.mark.parametrize(("ci", "outcome"), [("1", pytest.fail.Exception), (None, pytest.skip.Exception)])
def test_missing_redis_server_fails_under_ci_and_skips_otherwise(
    monkeypatch: pytest.MonkeyPatch, ci: str | None, outcome: type[BaseException]
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="redis-server is not installed"):
        conftest._require_redis_server()
