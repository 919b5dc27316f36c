"""Interop: the TypeScript SDK client (1.32.2) runs a legacy session through the fleet of
tests/system/test_fleet_haproxy.py: three worker processes (uvicorn, hypercorn asyncio, hypercorn Trio)
behind HAProxy in round robin, sharing a redis-server. Its calls land on every worker; progress,
results and the DELETE at the end work wherever each request lands.

    pytest -p anyio tests/interop/test_fleet_ts.py -m node
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from node_env import NodeEnv, NodeUnavailable, ensure_node_env
from test_ts_client import run_client, text_of

from tests.kit.fleet_worker import TOKEN_A
from tests.kit.redis_server import RedisServer
from tests.system.test_fleet_haproxy import GUARD, WORKERS, fleet
from tests.system.test_fleet_haproxy import fleet_redis as fleet_redis  # the fixture

pytestmark = [pytest.mark.node, pytest.mark.anyio]


@pytest.fixture(scope="session")
def node_env() -> NodeEnv:
    try:
        return ensure_node_env()
    except NodeUnavailable as exc:
        pytest.fail(f"interop tests need Node.js and the pinned npm packages: {exc}", pytrace=False)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the client is a node process; the workers run on both backends


async def test_typescript_client_through_the_fleet(fleet_redis: RedisServer, tmp_path: Path, node_env: NodeEnv) -> None:
    calls = [("whereami", {})] * 6 + [("progress", {"steps": 3})] + [("echo", {"text": f"t{n}"}) for n in range(3)]
    with anyio.fail_after(GUARD):
        async with fleet(fleet_redis, tmp_path) as running:
            run = await run_client(node_env, running.url, calls, token=TOKEN_A)
    assert run.returncode == 0, str(run)
    assert not run.of("error"), str(run)
    served_by = {text_of(e["result"]) for e in run.of("result") if e["tool"] == "whereami"}
    assert served_by == set(WORKERS), str(run)
    assert [e["progress"]["progress"] for e in run.of("progress") if e["tool"] == "progress"] == [1, 2, 3]
    assert text_of(run.result("progress")) == "done 3"
    assert [text_of(e["result"]) for e in run.of("result") if e["tool"] == "echo"] == [
        "alpha:t0",
        "alpha:t1",
        "alpha:t2",
    ]
    assert run.of("terminated"), str(run)
