"""RedisEventStore beyond the EventStore contract (tests/ports): resumption through the ASGI interface and
real servers, the keys and TTLs it writes, and what happens when redis-server stops, crashes and returns.

Every test runs against a real redis-server started for it (tests/kit/redis_server.py), on asyncio and Trio.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from mcp.server import MCPServer
from mcp.server.mcpserver import Context

import asgi_mcp
from asgi_mcp import ConfigurationError, McpApp, StoreUnavailable
from asgi_mcp._ports.replay import EventLog
from tests.kit.mcp_servers import Probe, build_server, text_of
from tests.kit.memory import open_session, serving
from tests.kit.messages import LEGACY, call_tool
from tests.kit.polling import wait_until
from tests.kit.real_servers import SERVERS, granian_server
from tests.kit.redis_server import RedisServer
from tests.kit.sse import SSEDecoder

pytestmark = pytest.mark.anyio

RedisEventStore = asgi_mcp.RedisEventStore


def note(n: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": "t", "progress": n}}


@asynccontextmanager
async def opened(url: str, **options: Any) -> AsyncIterator[RedisEventStore]:
    async with RedisEventStore(url, **options) as store:
        yield store


# -- the package surface ------------------------------------------------------------------------------


def test_exported_lazily_and_named_publicly() -> None:
    assert RedisEventStore.__module__ == "asgi_mcp"
    # `import asgi_mcp` and `from asgi_mcp import *` never load coredis (an optional extra).
    code = "import sys, asgi_mcp; from asgi_mcp import *; assert 'coredis' not in sys.modules, 'coredis loaded'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize(
    "options",
    [{"max_events_per_stream": 0}, {"ttl": 0}, {"prefix": ""}, {"prefix": "a{b}"}, {"timeout": 0}],
)
def test_bad_configuration_is_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        RedisEventStore("redis://127.0.0.1:1/0", **options)


def test_the_app_refuses_a_ttl_shorter_than_twice_the_idle_timeout() -> None:
    store = RedisEventStore("redis://127.0.0.1:1/0", ttl=100)
    with pytest.raises(ConfigurationError, match="twice session_idle_timeout"):
        McpApp(build_server(), event_store=store, session_idle_timeout=51)
    McpApp(build_server(), event_store=store, session_idle_timeout=50)
    McpApp(build_server(), event_store=store, session_idle_timeout=None)  # sessions never expire: no bound to keep


async def test_an_unopened_store_says_how_to_open_it() -> None:
    store = RedisEventStore("redis://127.0.0.1:1/0")
    with pytest.raises(ConfigurationError, match="async with store"):
        await store.store_event("tag/s", None)


# -- what it writes -----------------------------------------------------------------------------------


async def test_one_key_per_session_stream_with_hash_tag_and_ttl(shared_redis: RedisServer, redis_prefix: str) -> None:
    with anyio.fail_after(10):
        async with opened(shared_redis.url, prefix=redis_prefix, ttl=120, max_events_per_stream=2) as store:
            client = store.connection.client
            tag = EventLog.new_tag()
            for n in range(5):
                await store.store_event(f"{tag}/a", None if n == 0 else as_model(note(n)))
            await store.store_event(f"{tag}/b", as_model(note(9)))
            keys = sorted(await client.keys(f"{redis_prefix}:*"))
            assert keys == [f"{redis_prefix}:ev:{{{tag}}}/a", f"{redis_prefix}:ev:{{{tag}}}/b"]
            assert await client.xlen(keys[0]) == 2  # MAXLEN is exact
            for key in keys:
                assert 110_000 < await client.pttl(key) <= 120_000
            # The value is the message's JSON text; nothing else is stored.
            entries = await client.xrange(keys[1])
            assert [dict(entry.field_values) for entry in entries] == [
                {"d": json.dumps(note(9), separators=(",", ":"))}
            ]


def as_model(message: dict[str, Any]) -> Any:
    from mcp.types import jsonrpc_message_adapter

    return jsonrpc_message_adapter.validate_python(message)


async def test_a_replay_renews_the_ttl(shared_redis: RedisServer, redis_prefix: str) -> None:
    with anyio.fail_after(10):
        async with opened(shared_redis.url, prefix=redis_prefix, ttl=60) as store:
            client = store.connection.client
            event_id = await store.store_event("tag/s", as_model(note(1)))
            key = store.key("tag/s")
            await client.pexpire(key, 1_000)
            assert (await store.json_events_after(event_id)) == ("tag/s", [])
            assert await client.pttl(key) > 50_000


# -- through the ASGI interface ----------------------------------------------------------------------


async def test_close_sse_stream_then_resume_with_last_event_id(shared_redis: RedisServer, redis_prefix: str) -> None:
    """SEP-1699 polling with the events in Redis: the app opens the store in its lifespan and closes it."""
    probe = Probe()
    store = RedisEventStore(shared_redis.url, prefix=redis_prefix)
    app = McpApp(build_server(probe), event_store=store, retry_interval=100)
    with anyio.fail_after(20):
        async with serving(app) as client:
            assert store.connection.entered
            session_id = await open_session(client)
            call = await client.post(call_tool(4, "poll"), session_id=session_id)
            events = await call.events()
            assert [e.data == "" for e in events] == [True, False]
            probe.release.set()
            await wait_until(lambda: not _handler_running(client, session_id))
            resumed = await client.get(session_id, last_event_id=events[1].id)
            assert resumed.status == 200
            replayed = await resumed.messages()
            assert [m.get("method") for m in replayed] == ["notifications/message", None]
            assert replayed[0]["params"]["data"] == "after close"
            assert text_of(replayed[1]["result"]) == "polled"
            # They came from Redis: the stream's key holds two logs and the answer (and priming events).
            (key,) = await store.connection.client.keys(f"{redis_prefix}:ev:*")
            entries = await store.connection.client.xrange(key)
            assert len([entry for entry in entries if entry.field_values["d"]]) == 3
    assert not store.connection.entered


async def test_another_sessions_last_event_id_never_replays(shared_redis: RedisServer, redis_prefix: str) -> None:
    probe = Probe()
    app = McpApp(build_server(probe), event_store=RedisEventStore(shared_redis.url, prefix=redis_prefix))
    with anyio.fail_after(20):
        async with serving(app) as client:
            alice = await open_session(client)
            mallory = await open_session(client)
            call = await client.post(call_tool(4, "poll"), session_id=alice)
            events = await call.events()
            probe.release.set()
            await wait_until(lambda: not _handler_running(client, alice))
            stolen = await client.get(mallory, last_event_id=events[0].id)
            assert stolen.status == 200  # only mallory's own standalone stream
            await anyio.wait_all_tasks_blocked()
            assert b"before close" not in stolen.body
            assert b"polled" not in stolen.body
            stolen.disconnect()
            own = await client.get(alice, last_event_id=events[0].id)
            assert b"polled" in await own.read()


@asynccontextmanager
async def _served_with_redis(server: str, anyio_backend: str, url: str, prefix: str) -> AsyncIterator[tuple[str, Any]]:
    """The test app with a RedisEventStore on `server`; yields its base URL and how to release the probe."""
    if server == "granian":  # its own process (asyncio) whatever the client's backend; the probe is there
        async with granian_server({"event_store": {"redis": url, "prefix": prefix}}) as base:
            yield base, None
        return
    backend, serve = SERVERS[server]
    if anyio_backend != backend:
        pytest.skip(f"{server} runs on {backend}")
    probe = Probe()
    app = McpApp(build_server(probe), event_store=RedisEventStore(url, prefix=prefix))
    async with serve(app) as base:
        yield base, probe.release.set


@pytest.mark.integration
@pytest.mark.parametrize("server", [*SERVERS, "granian"])
async def test_resumption_over_a_real_server(
    server: str, anyio_backend: str, shared_redis: RedisServer, redis_prefix: str
) -> None:
    """Real servers: the store is opened by the server's lifespan task and used from its request tasks
    (coredis's pool starts connection tasks in the lifespan's group)."""
    with anyio.fail_after(30):
        async with (
            _served_with_redis(server, anyio_backend, shared_redis.url, redis_prefix) as (base, release),
            httpx.AsyncClient(base_url=base) as http,
        ):
            headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
            init = await http.post("/mcp", json=_initialize(), headers=headers)
            session = {**headers, "mcp-session-id": init.headers["mcp-session-id"], "mcp-protocol-version": LEGACY}
            note_initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            assert (await http.post("/mcp", json=note_initialized, headers=session)).status_code == 202
            decoder = SSEDecoder()
            async with http.stream("POST", "/mcp", json=call_tool(4, "poll"), headers=session) as response:
                events = [event async for chunk in response.aiter_bytes() for event in decoder.feed(chunk)]
            assert json.loads(events[1].data)["params"]["data"] == "before close"
            if release is not None:
                release()
            else:  # granian: the probe is in its process, a tool there releases it
                released = await http.post("/mcp", json=call_tool(5, "release"), headers=session)
                assert text_of(json.loads(SSEDecoder().feed(released.content)[-1].data)["result"]) == "released"
            resumed = await http.get("/mcp", headers={**session, "last-event-id": events[1].id or ""})
            decoder = SSEDecoder()
            replayed = [json.loads(e.data) for e in decoder.feed(resumed.content) if e.data]
            assert replayed[0]["params"]["data"] == "after close"
            assert text_of(replayed[-1]["result"]) == "polled"


def _initialize() -> dict[str, Any]:
    from tests.kit.messages import initialize

    return initialize(0, LEGACY)


def _handler_running(client: Any, session_id: str) -> bool:
    entry = client.app._runtime.table.get(session_id)
    return entry is not None and bool(entry.value.dispatcher._in_flight)


# -- failure: redis-server stopped, crashed, restarted -----------------------------------------------


async def test_stopped_redis_is_store_unavailable_fast_then_recovers(redis_server: RedisServer) -> None:
    async with opened(redis_server.url, timeout=1.0) as store:
        with anyio.fail_after(10):
            first = await store.store_event("tag/s", as_model(note(1)))
        redis_server.stop()
        with anyio.fail_after(2):  # the bound: 503 within 2 s, never a hang
            with pytest.raises(StoreUnavailable) as refused:
                await store.store_event("tag/s", as_model(note(2)))
            with pytest.raises(StoreUnavailable):
                await store.json_events_after(first)
        assert refused.value.status == 503
        assert (b"retry-after", b"1") in refused.value.headers
        redis_server.start()
        with anyio.fail_after(10):
            # Not persistent: the old events are gone (replay says "unknown"), new ones work.
            assert await store.json_events_after(first) is None
            second = await store.store_event("tag/s", as_model(note(3)))
            assert (await store.json_events_after(second)) == ("tag/s", [])


@pytest.mark.parametrize("crash", [False, True])
async def test_persistent_redis_keeps_every_acknowledged_event_across_a_restart(
    redis_server_factory: Any, crash: bool
) -> None:
    """appendfsync always: what XADD acknowledged survives SIGTERM and SIGKILL alike; ids keep ascending."""
    server: RedisServer = redis_server_factory(persistent=True)
    async with opened(server.url) as store:
        with anyio.fail_after(10):
            priming = await store.store_event("tag/s", None)
            before = [await store.store_event("tag/s", as_model(note(n))) for n in range(3)]
        server.kill() if crash else server.stop()
        server.start()
        with anyio.fail_after(10):
            after = await store.store_event("tag/s", as_model(note(3)))
            found = await store.json_events_after(priming)
        assert found is not None
        assert [event.event_id for event in found[1]] == [*before, after]


def announcing_server(probe: Probe) -> MCPServer:
    """`build_server`, and a tool that notifies on the session's standalone (GET) stream."""
    server = build_server(probe)

    @server.tool()
    async def announce(text: str, ctx: Context) -> str:
        params = types.LoggingMessageNotificationParams(level="info", data=text, logger="tests")
        await ctx.request_context.session.send_notification(types.LoggingMessageNotification(params=params))
        return "announced"

    return server


def id_lines(body: bytes) -> list[str]:
    """The `id:` fields of an SSE body, as sent (a decoder would carry the last one over)."""
    return [line[3:].strip().decode() for line in body.split(b"\n") if line.startswith(b"id:")]


async def test_while_redis_is_down_a_held_session_goes_on_with_events_that_carry_no_id(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 13's "sessions a worker holds keep working": SSE answers and the GET stream go on without
    the event store, their events sent without an id (not stored: nothing for a `Last-Event-ID` to
    point at); a resumption, which needs the store, gets 503 with Retry-After within 2 s; a stream is
    not closed for polling meanwhile. Once Redis is back, events carry ids and replay again."""
    probe = Probe()
    app = McpApp(announcing_server(probe), event_store=RedisEventStore(redis_server.url, timeout=1.0))
    with anyio.fail_after(30):
        async with serving(app) as client:
            session_id = await open_session(client)
            listening = await client.get(session_id)
            assert listening.status == 200
            assert (await listening.next_event(timeout=10)).data == ""  # the priming event, stored
            before = await client.post(call_tool(1, "progress", {"steps": 1}), session_id=session_id)
            stored = [event.id for event in await before.events(timeout=10)]
            redis_server.stop()

            with anyio.fail_after(2):  # the bound for a 503; every failed write here is far quicker
                during = await client.post(call_tool(2, "progress", {"steps": 2}), session_id=session_id)
                answered = [json.loads(event.data) for event in await during.events()]
            assert (during.status, during.content_type) == (200, "text/event-stream")
            assert [message["params"]["data"] for message in answered[:-1]] == ["log 1", "log 2"]
            assert text_of(answered[-1]["result"]) == "done 2"
            assert id_lines(during.body) == []  # no priming event either: its id could not be resumed from

            # The held session's GET stream keeps delivering, without ids.
            announced = await client.post(call_tool(3, "announce", {"text": "while down"}), session_id=session_id)
            assert text_of((await announced.messages())[-1]["result"]) == "announced"
            seen = len(listening.body)
            assert json.loads((await listening.next_event()).data)["params"]["data"] == "while down"
            assert id_lines(listening.body[seen:]) == []

            # Resuming needs the store: 503 with Retry-After, within 2 s.
            with anyio.fail_after(2):
                refused = await client.get(session_id, last_event_id=stored[-1])
                body = await refused.json()
            assert (refused.status, refused.header("retry-after"), body["error"]["code"]) == (503, "1", -32000)

            # Closing a stream for polling would lose what follows: it stays open.
            polled = await client.post(call_tool(4, "poll"), session_id=session_id)
            assert (await polled.next_message())["params"]["data"] == "before close"
            await probe.closed_stream.wait()
            probe.release.set()
            rest = await polled.messages()
            assert rest[0]["params"]["data"] == "after close"
            assert text_of(rest[-1]["result"]) == "polled"
            assert id_lines(polled.body) == []

            redis_server.start()
            after = await client.post(call_tool(5, "progress", {"steps": 1}), session_id=session_id)
            events = await after.events(timeout=10)
            # The priming event, the log and the answer: each with its own id again.
            assert id_lines(after.body) == [event.id for event in events]
            assert len(set(id_lines(after.body))) == 3
            resumed = await client.get(session_id, last_event_id=events[0].id)
            assert resumed.status == 200
            replayed = await resumed.events()
            assert [(event.id, event.data) for event in replayed] == [(event.id, event.data) for event in events[1:]]
            seen = len(listening.body)
            await client.post(call_tool(6, "announce", {"text": "back"}), session_id=session_id)
            assert json.loads((await listening.next_event()).data)["params"]["data"] == "back"
            assert len(id_lines(listening.body[seen:])) == 1
            listening.disconnect()
    logged = [record.getMessage() for record in caplog.records if record.name == "asgi_mcp.redis"]
    assert len(logged) == 2, logged
    assert "event store out of use: SSE events go out without ids" in logged[0]
    assert logged[1] == "Redis reachable again: event store restored"


async def test_degradation_is_logged_once_per_transition_without_secrets(
    redis_server_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server: RedisServer = redis_server_factory(password="pw-secret-123")
    async with opened(server.url, timeout=1.0) as store:
        with anyio.fail_after(10):
            first = await store.store_event("tag/s", as_model(note(1)))
        server.stop()
        for _ in range(3):
            with anyio.fail_after(2), pytest.raises(StoreUnavailable):
                await store.json_events_after(first)
        server.start()
        with anyio.fail_after(10):
            await store.store_event("tag/s", as_model(note(2)))
            await store.store_event("tag/s", as_model(note(3)))
    logged = [record.getMessage() for record in caplog.records if record.name == "asgi_mcp.redis"]
    assert len(logged) == 2
    assert "unreachable" in logged[0]
    assert "reachable again" in logged[1]
    assert not any("pw-secret-123" in message or "tag/s" in message for message in logged)
