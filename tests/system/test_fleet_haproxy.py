"""The fleet test: three workers (uvicorn on asyncio, hypercorn on asyncio, hypercorn's Trio worker),
each its own process, behind a real HAProxy in round robin with no stickiness, sharing a real
redis-server. The Python SDK client runs sessions through HAProxy: tools, progress, elicitation, the
GET stream, resumption with `Last-Event-ID`; one worker is killed mid-session and the client carries
on; tenant B never gets anything of tenant A's, through any worker.

HAProxy and redis-server are Debian's packages (`.ci/run` installs both); without them the test is
skipped, or fails under CI (`CI` set). The client side runs on asyncio and on Trio.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.abc
import httpx
import httpx2
import mcp_types as types
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.kit.fleet_worker import TOKEN_A, TOKEN_B
from tests.kit.http import headers
from tests.kit.messages import LEGACY, call_tool, initialize, notification
from tests.kit.processes import REPO, ProcessRun, not_installed, running_process
from tests.kit.real_servers import free_port
from tests.kit.redis_server import RedisServer
from tests.kit.sse import SSEDecoder

pytestmark = pytest.mark.anyio

HAPROXY: Final = "/usr/sbin/haproxy"
START_TIMEOUT: Final = 30.0
GUARD: Final = 150.0  # three interpreters start on a shared 2-core machine
# name -> command (after the interpreter); {port} is filled in.
WORKERS: Final = {
    "uvicorn": ["-m", "uvicorn", "tests.kit.fleet_worker:app", "--host", "127.0.0.1", "--port", "{port}"],
    "hypercorn": ["-m", "hypercorn", "tests.kit.fleet_worker:app", "--bind", "127.0.0.1:{port}"],
    "hypercorn-trio": ["-m", "hypercorn", "-k", "trio", "tests.kit.fleet_worker:app", "--bind", "127.0.0.1:{port}"],
}
HAPROXY_CONFIG: Final = """\
global
    maxconn 512
defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    # A worker that refuses connections (killed) costs the request nothing: retried on another.
    retries 3
    retry-on conn-failure empty-response
    option redispatch 1
frontend mcp
    bind 127.0.0.1:{port}
    default_backend workers
backend workers
    balance roundrobin
{stickiness}
    option httpchk GET /health
    default-server check inter 200ms fall 1 rise 1
{servers}
"""
# docs/scaling-out.md's optional stickiness: a session's requests stay on the worker that opened it.
STICKINESS: Final = """\
    stick-table type string len 64 size 1m expire 30m
    stick store-response res.hdr(mcp-session-id)
    stick match req.hdr(mcp-session-id)"""


def _require(binary: str, package: str) -> None:
    if shutil.which(binary) is None and not Path(binary).exists():
        not_installed(f"{binary} is not installed (Debian: apt-get install -y {package})")


class Fleet:
    def __init__(self, url: str, workers: dict[str, ProcessRun]) -> None:
        self.url = url
        self.workers = workers


@contextmanager
def notify_socket(directory: Path) -> Iterator[tuple[socket.socket, str]]:
    """HAProxy's `-Ws` says READY=1 on NOTIFY_SOCKET once it listens: no polling."""
    path = str(directory / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    try:
        yield sock, path
    finally:
        sock.close()


@asynccontextmanager
async def fleet(redis: RedisServer, directory: Path, *, sticky: bool = False) -> AsyncIterator[Fleet]:
    env = dict(os.environ, FLEET_REDIS_URL=redis.url, FLEET_PREFIX="fleet", PYTHONPATH=str(REPO))
    async with AsyncExitStack() as stack:
        workers: dict[str, ProcessRun] = {}
        servers = []
        for name, arguments in WORKERS.items():
            port = free_port()
            command = [sys.executable, *(a.replace("{port}", str(port)) for a in arguments)]
            worker_env = env | {"FLEET_WORKER": name}
            # In a process group of its own, killed as a group: hypercorn serves from a child process.
            worker = running_process(name, command, env=worker_env, merge_stderr=True, own_group=True)
            workers[name] = await stack.enter_async_context(worker)
            marker = "Application startup complete" if name == "uvicorn" else "Running on"
            await workers[name].wait_for(lambda out, marker=marker: marker in out)
            servers.append(f"    server {name} 127.0.0.1:{port}")
        port = free_port()
        config = directory / "haproxy.cfg"
        stickiness = STICKINESS if sticky else ""
        config.write_text(HAPROXY_CONFIG.format(port=port, servers="\n".join(servers), stickiness=stickiness))
        ready, notify_path = stack.enter_context(notify_socket(directory))
        haproxy_env = dict(os.environ, NOTIFY_SOCKET=notify_path)
        proxy = await anyio.open_process([HAPROXY, "-Ws", "-f", str(config)], env=haproxy_env, stdin=None)
        stack.push_async_callback(_stop_haproxy, proxy)
        with anyio.fail_after(START_TIMEOUT):
            while b"READY=1" not in await anyio.to_thread.run_sync(ready.recv, 4096):
                pass
        yield Fleet(f"http://127.0.0.1:{port}/mcp", workers)


async def _stop_haproxy(proxy: anyio.abc.Process) -> None:
    if proxy.returncode is None:
        proxy.terminate()
    with anyio.move_on_after(10, shield=True):
        await proxy.wait()
    await proxy.aclose()


@pytest.fixture
def fleet_redis(redis_server_factory: Any) -> RedisServer:
    _require(HAPROXY, "haproxy")
    server: RedisServer = redis_server_factory()
    return server


def _text(result: types.CallToolResult) -> str:
    assert not result.is_error, result
    content = result.content[0]
    assert isinstance(content, types.TextContent)
    return content.text


class Client:
    """One SDK client session through HAProxy, with what its callbacks received."""

    def __init__(self) -> None:
        self.logs: list[str] = []
        self.arrived = anyio.Event()

    async def on_log(self, params: types.LoggingMessageNotificationParams) -> None:
        self.logs.append(str(params.data))
        self.arrived.set()

    async def on_elicit(self, context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        return types.ElicitResult(action="accept", content={"answer": "42"})

    async def log_arrives(self, text: str) -> None:
        while text not in self.logs:
            self.arrived = anyio.Event()
            await self.arrived.wait()


@asynccontextmanager
async def sdk_session(url: str, token: str, client: Client) -> AsyncIterator[ClientSession]:
    http = httpx2.AsyncClient(headers={"authorization": f"Bearer {token}"}, timeout=30)
    async with (
        http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write, logging_callback=client.on_log, elicitation_callback=client.on_elicit) as session,
    ):
        await session.initialize()
        yield session


async def test_a_session_through_haproxy_survives_a_killed_worker(
    fleet_redis: RedisServer, tmp_path: Path, anyio_backend: str
) -> None:
    alpha, bravo = Client(), Client()
    with anyio.fail_after(GUARD):
        async with (
            fleet(fleet_redis, tmp_path) as running,
            sdk_session(running.url, TOKEN_A, alpha) as session,
            sdk_session(running.url, TOKEN_B, bravo) as other,
        ):
            # Round robin, no stickiness: one session's calls reach every worker.
            served_by = {_text(await session.call_tool("whereami", {})) for _ in range(6)}
            assert served_by == set(WORKERS)

            steps: list[float] = []

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                steps.append(progress)

            result = await session.call_tool("progress", {"steps": 3}, progress_callback=on_progress)
            assert _text(result) == "done 3"
            assert steps == [1, 2, 3]
            # Elicitation: the client's answer is a POST of its own, to whichever worker comes next.
            for _ in range(3):
                assert _text(await session.call_tool("ask", {})) == "accept:42"
            # The GET stream is held by one worker; announcements made on any worker reach it.
            for n in range(3):
                assert _text(await session.call_tool("announce", {"text": f"n{n}"})) == "announced"
                await alpha.log_arrives(f"alpha:n{n}")

            await running.workers["uvicorn"].crash()
            for n in range(6):
                assert _text(await session.call_tool("echo", {"text": f"after-{n}"})) == f"alpha:after-{n}"
            assert _text(await session.call_tool("announce", {"text": "after-kill"})) == "announced"
            await alpha.log_arrives("alpha:after-kill")
            assert {_text(await session.call_tool("whereami", {})) for _ in range(4)} == {"hypercorn", "hypercorn-trio"}

            # Tenant B: its own session works, and it never got anything of tenant A's.
            assert _text(await other.call_tool("echo", {"text": "b"})) == "bravo:b"
            assert _text(await other.call_tool("announce", {"text": "b"})) == "announced"
            await bravo.log_arrives("bravo:b")
            assert all(log.startswith("bravo:") for log in bravo.logs), bravo.logs
            assert all(log.startswith("alpha:") for log in alpha.logs), alpha.logs


async def test_resumption_and_isolation_through_every_worker(
    fleet_redis: RedisServer, tmp_path: Path, anyio_backend: str
) -> None:
    with anyio.fail_after(GUARD):
        async with fleet(fleet_redis, tmp_path) as running, httpx.AsyncClient(timeout=30) as http:
            opened = await http.post(running.url, json=initialize(0, LEGACY), headers=headers(TOKEN_A))
            assert opened.status_code == 200, opened.text
            session_id = opened.headers["mcp-session-id"]
            acked = await http.post(
                running.url, json=notification("notifications/initialized"), headers=headers(TOKEN_A, session_id)
            )
            assert acked.status_code == 202
            answered = await http.post(
                running.url,
                json=call_tool(1, "progress", {"steps": 3}, progress_token="p"),
                headers=headers(TOKEN_A, session_id),
            )
            events = [e for e in SSEDecoder().feed(answered.content) if e.id and e.data]
            first_progress = events[0].id
            assert first_progress is not None
            # Three times in a row: round robin puts each on another worker; each replays the same.
            for _ in range(3):
                resumed = await http.get(
                    running.url, headers=headers(TOKEN_A, session_id, **{"last-event-id": first_progress})
                )
                assert resumed.status_code == 200
                replayed = [json.loads(e.data) for e in SSEDecoder().feed(resumed.content) if e.data]
                assert [m.get("params", {}).get("progress") for m in replayed[:2]] == [2, 3]
                assert replayed[-1]["result"]["content"][0]["text"] == "done 3"
            # Tenant B, with A's session id and event id: 404 on every worker, nothing replayed.
            for _ in range(3):
                stolen = await http.post(
                    running.url, json=call_tool(2, "echo", {"text": "x"}), headers=headers(TOKEN_B, session_id)
                )
                assert stolen.status_code == 404
                assert stolen.json()["error"]["code"] == -32600
                replay = await http.get(
                    running.url, headers=headers(TOKEN_B, session_id, **{"last-event-id": first_progress})
                )
                assert replay.status_code == 404
            # DELETE through any worker ends it on all.
            assert (await http.delete(running.url, headers=headers(TOKEN_A, session_id))).status_code == 200
            for _ in range(3):
                gone = await http.post(
                    running.url, json=call_tool(3, "echo", {"text": "x"}), headers=headers(TOKEN_A, session_id)
                )
                assert gone.status_code == 404


async def test_with_the_documented_stick_table_a_session_stays_on_one_worker(
    fleet_redis: RedisServer, tmp_path: Path, anyio_backend: str
) -> None:
    client = Client()
    with anyio.fail_after(GUARD):
        async with (
            fleet(fleet_redis, tmp_path, sticky=True) as running,
            sdk_session(running.url, TOKEN_A, client) as session,
        ):
            served_by = {_text(await session.call_tool("whereami", {})) for _ in range(6)}
            assert len(served_by) == 1
            # Its worker gone, the session moves to another one, by adoption.
            killed = served_by.pop()
            await running.workers[killed].crash()
            moved = {_text(await session.call_tool("whereami", {})) for _ in range(4)}
            # The table still names the dead worker, so HAProxy balances the session's requests over the
            # others until the entry expires: each adopts it.
            assert moved <= set(WORKERS) - {killed}
            assert _text(await session.call_tool("echo", {"text": "still"})) == "alpha:still"


async def test_the_fleet_recovers_when_redis_server_restarts(
    redis_server_factory: Any, tmp_path: Path, anyio_backend: str
) -> None:
    """redis-server (with its append-only file) stopped and started again mid-session: meanwhile the
    session, which every worker holds, goes on (its SSE events without ids: resumability waits for
    Redis), never a hang; once it is back the same session goes on through every worker."""
    _require(HAPROXY, "haproxy")
    redis: RedisServer = redis_server_factory(persistent=True)
    alpha = Client()
    with anyio.fail_after(GUARD):
        async with fleet(redis, tmp_path) as running, sdk_session(running.url, TOKEN_A, alpha) as session:
            # Every worker holds the session now.
            assert {_text(await session.call_tool("whereami", {})) for _ in range(6)} == set(WORKERS)
            redis.stop()
            # Held everywhere: answered on SSE without the event store (events without ids), no hang.
            answered_by: set[str] = set()
            for _ in range(6):
                started = anyio.current_time()
                answered_by.add(_text(await session.call_tool("whereami", {})))
                assert anyio.current_time() - started < 2.0
            assert answered_by == set(WORKERS)
            redis.start()
            for _ in range(10):  # as a client does after the Retry-After (1 s) of a 503
                try:
                    assert _text(await session.call_tool("echo", {"text": "again"})) == "alpha:again"
                    break
                except MCPError:
                    await anyio.sleep(1)
            assert {_text(await session.call_tool("whereami", {})) for _ in range(6)} == set(WORKERS)
            # Back: a standalone message crosses workers again (each worker subscribes again with
            # backoff; a message published before its worker listens again is lost, so it is resent).
            for attempt in range(40):
                assert _text(await session.call_tool("announce", {"text": f"back-{attempt}"})) == "announced"
                with anyio.move_on_after(0.25):
                    await alpha.log_arrives(f"alpha:back-{attempt}")
                if f"alpha:back-{attempt}" in alpha.logs:
                    break
            assert any(log.startswith("alpha:back-") for log in alpha.logs)
            # And a new session opens and moves between workers.
            other = Client()
            async with sdk_session(running.url, TOKEN_A, other) as fresh:
                assert {_text(await fresh.call_tool("whereami", {})) for _ in range(9)} == set(WORKERS)
