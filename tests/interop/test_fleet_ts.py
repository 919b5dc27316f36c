"""Interop: the TypeScript SDK client (1.32.2) runs legacy sessions through the fleet of
tests/system/test_fleet_haproxy.py: three worker processes (uvicorn, hypercorn asyncio, hypercorn Trio)
behind HAProxy in round robin, sharing a redis-server. Its calls land on every worker; progress,
elicitation, notifications on its GET stream, resumption with `Last-Event-ID` and the DELETE at the
end work wherever each request lands, and the session carries on when the worker holding its GET
stream is killed.

    pytest -p anyio tests/interop/test_fleet_ts.py -m node
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import anyio
import pytest
from node_env import NodeEnv
from node_session import Event, NodeSession, node_session
from test_ts_client import run_client, text_of

from tests.kit.fleet_worker import TOKEN_A
from tests.kit.redis_server import RedisServer
from tests.system.test_fleet_haproxy import GUARD, WORKERS, fleet
from tests.system.test_fleet_haproxy import fleet_redis as fleet_redis  # the fixture

pytestmark = [pytest.mark.node, pytest.mark.anyio]

SESSION_CLIENT: Final = Path(__file__).resolve().parent / "session_client.mjs"
SURVEYS: Final = 5
REPORTED: Final = ("Received a progress notification for an unknown token", "SSE stream disconnected")


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


async def _call(client: NodeSession, tool: str, **args: Any) -> str:
    [result] = [e for e in await client.command("call", tool=tool, args=args) if e["type"] == "result"]
    return text_of(result["result"])


async def _log_arrives(client: NodeSession, text: str, *, since: int = 0) -> None:
    await client.seen(lambda e: e["type"] == "log" and e["params"]["data"] == text, since=since)


def _resumed_get(event: Event) -> bool:
    return event["type"] == "http" and event["method"] == "GET" and event["lastEventId"] is not None


async def _stream_holder(client: NodeSession) -> str:
    """The worker holding the session's GET stream: the one with a stream open besides the call's own.
    (Surveyed again, a few times at most, while a worker still counts a stream that has just ended.)"""
    for _ in range(SURVEYS):
        counts: dict[str, int] = {}
        while len(counts) < len(WORKERS):  # round robin: each call on the next worker
            worker, count = (await _call(client, "open_streams")).split()
            counts[worker] = int(count)
        if sorted(counts.values()) == [1, 1, 2]:
            return max(counts, key=counts.__getitem__)
    raise AssertionError(f"no single worker holds the GET stream: {counts}")


async def test_typescript_session_through_the_fleet_survives_a_killed_worker(
    fleet_redis: RedisServer, tmp_path: Path, node_env: NodeEnv
) -> None:
    with anyio.fail_after(GUARD):
        async with (
            fleet(fleet_redis, tmp_path) as running,
            node_session(node_env, SESSION_CLIENT, running.url, "--token", TOKEN_A) as client,
        ):
            await client.seen(lambda e: e["type"] == "connected")
            assert {await _call(client, "whereami") for _ in range(6)} == set(WORKERS)

            # Progress, and the ids of the call's SSE events (the SDK's resumption tokens).
            events = await client.command("call", tool="progress", args={"steps": 3})
            assert [e["progress"]["progress"] for e in events if e["type"] == "progress"] == [1, 2, 3]
            [result] = [e for e in events if e["type"] == "result"]
            assert text_of(result["result"]) == "done 3"
            # The stream's first event is the priming event (no data); the progress and the answer follow.
            first, *later = result["eventIds"]
            assert len(later) == 4, result

            # Elicitation: the client's answer is a POST of its own, to whichever worker comes next.
            for _ in range(3):
                assert await _call(client, "ask") == "accept:42"
            assert len(client.of("elicited")) == 3

            # The GET stream is held by one worker; announcements made on any worker reach it.
            for n in range(3):
                assert await _call(client, "announce", text=f"n{n}") == "announced"
                await _log_arrives(client, f"alpha:n{n}")

            # Resumption: the call again with the SDK's resumptionToken, a GET with Last-Event-ID; three
            # times in a row, so on each worker: each replays the same events, the answer settles the call.
            for _ in range(3):
                mark = len(client.events)
                [resumed] = [
                    e
                    for e in await client.command("resume", tool="progress", args={"steps": 3}, after=first)
                    if e["type"] == "resumed"
                ]
                assert text_of(resumed["result"]) == "done 3"
                replayed = resumed["messages"]
                assert [m["params"]["progress"] for m in replayed[:-1]] == [1, 2, 3], resumed
                assert replayed[-1]["result"]["content"][0]["text"] == "done 3", resumed
                [get] = [e for e in client.events[mark:] if _resumed_get(e)]
                assert (get["lastEventId"], get["status"]) == (first, 200)

            # The worker holding the GET stream killed mid-session: what is announced meanwhile is kept,
            # and the SDK's reconnection (a GET with the stream's Last-Event-ID, to another worker) gets it.
            holder = await _stream_holder(client)
            mark = len(client.events)
            await running.workers[holder].crash()
            assert await _call(client, "announce", text="during") == "announced"
            await _log_arrives(client, "alpha:during", since=mark)
            resumed_get = await client.seen(_resumed_get, since=mark)
            assert resumed_get["status"] == 200, resumed_get

            for n in range(6):
                assert await _call(client, "echo", text=f"after-{n}") == f"alpha:after-{n}"
            assert await _call(client, "ask") == "accept:42"
            assert await _call(client, "announce", text="after-kill") == "announced"
            await _log_arrives(client, "alpha:after-kill", since=mark)
            assert {await _call(client, "whereami") for _ in range(4)} == set(WORKERS) - {holder}

            await client.command("close")
            assert client.of("terminated")[0]["sessionId"] is None
    assert not client.of("error"), str(client)
    assert all(log["params"]["data"].startswith("alpha:") for log in client.of("log")), str(client)
    # What the client reported through onerror: the replayed progress of the first call (its token is
    # not the resumed request's), the GET stream cut by the kill and the one it aborts on close.
    reported = [e["message"] for e in client.of("transport_error")]
    assert all(m.startswith(REPORTED) for m in reported), str(client)
