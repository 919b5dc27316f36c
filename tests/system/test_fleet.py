"""Two workers sharing a real redis-server: legacy sessions adopted across workers, ended everywhere,
their GET streams and server-to-client answers crossing workers, replay on any worker, tenants apart.

Each worker is an `McpApp` with its own stores (its own Redis connections), served by a real HTTP
server on 127.0.0.1: uvicorn and the built-in server on asyncio, hypercorn's Trio worker and the
built-in server on Trio. Requests are plain HTTP (httpx), so each assertion names the worker it hits.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import coredis
import httpx
import pytest

from tests.kit.fleet_worker import TOKEN_A, TOKEN_B, worker_app
from tests.kit.http import answer_of as any_answer_of
from tests.kit.http import headers
from tests.kit.messages import LEGACY, call_tool, initialize, notification, request
from tests.kit.real_servers import serve_workers
from tests.kit.redis_server import RedisServer
from tests.kit.sse import SSEDecoder

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def two_workers(url: str, prefix: str, backend: str, **options: Any) -> AsyncIterator[tuple[str, str]]:
    async with serve_workers(lambda: worker_app(url, prefix, session_ttl=60, **options), backend) as served:
        (_, first), (_, second) = served
        yield first, second


def sse_messages(body: str) -> list[dict[str, Any]]:
    decoder = SSEDecoder()
    return [json.loads(event.data) for event in decoder.feed(body.encode()) if event.data]


async def open_session(client: httpx.AsyncClient, endpoint: str, token: str = TOKEN_A) -> str:
    response = await client.post(endpoint, json=initialize(0, LEGACY), headers=headers(token))
    assert response.status_code == 200, response.text
    session_id = response.headers["mcp-session-id"]
    acked = await client.post(
        endpoint, json=notification("notifications/initialized"), headers=headers(token, session_id)
    )
    assert acked.status_code == 202
    return session_id


@asynccontextmanager
async def fleet_session(
    redis: RedisServer, prefix: str, backend: str
) -> AsyncIterator[tuple[httpx.AsyncClient, str, str, str]]:
    """Two workers, an HTTP client, and a session of token A opened on the first worker:
    (client, first worker's endpoint, second worker's endpoint, session id)."""
    async with two_workers(redis.url, prefix, backend) as (first, second), httpx.AsyncClient() as client:
        yield client, first, second, await open_session(client, first)


async def call(
    client: httpx.AsyncClient, endpoint: str, session_id: str, message: dict[str, Any], token: str = TOKEN_A
) -> httpx.Response:
    return await client.post(endpoint, json=message, headers=headers(token, session_id))


def answer_of(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return any_answer_of(response)


@pytest.fixture
def backend_name(anyio_backend: str) -> str:
    return anyio_backend


async def test_a_session_opened_on_one_worker_is_served_by_the_other(
    shared_redis: RedisServer, redis_prefix: str, backend_name: str
) -> None:
    with anyio.fail_after(30):
        async with fleet_session(shared_redis, redis_prefix, backend_name) as (client, first, second, session_id):
            answer = answer_of(await call(client, second, session_id, call_tool(1, "echo", {"text": "hi"})))
            assert answer["result"]["content"][0]["text"] == "alpha:hi"
            # And back: both workers now hold it, each answers.
            answer = answer_of(await call(client, first, session_id, call_tool(2, "echo", {"text": "again"})))
            assert answer["result"]["content"][0]["text"] == "alpha:again"


async def test_another_principal_gets_404_never_403(
    shared_redis: RedisServer, redis_prefix: str, backend_name: str
) -> None:
    with anyio.fail_after(30):
        async with fleet_session(shared_redis, redis_prefix, backend_name) as (client, first, second, session_id):
            for endpoint in (second, first):
                response = await call(client, endpoint, session_id, call_tool(1, "echo", {"text": "x"}), token=TOKEN_B)
                assert response.status_code == 404
                assert response.json()["error"]["code"] == -32600
            unknown = await call(client, second, "no-such-session", call_tool(1, "echo", {"text": "x"}))
            assert unknown.status_code == 404
            # The owner still has it, on both workers.
            assert answer_of(await call(client, second, session_id, call_tool(2, "echo", {"text": "ok"})))["result"]


async def test_delete_on_one_worker_ends_the_session_everywhere(
    shared_redis: RedisServer, redis_prefix: str, backend_name: str
) -> None:
    with anyio.fail_after(30):
        async with fleet_session(shared_redis, redis_prefix, backend_name) as (client, first, second, session_id):
            answer_of(await call(client, second, session_id, call_tool(1, "echo", {"text": "adopted"})))
            async with client.stream("GET", second, headers=headers(TOKEN_A, session_id)) as stream:
                assert stream.status_code == 200
                deleted = await client.delete(first, headers=headers(TOKEN_A, session_id))
                assert deleted.status_code == 200
                # The copy on the other worker ends: its GET stream closes.
                async for _ in stream.aiter_bytes():
                    pass
            for endpoint in (first, second):
                gone = await call(client, endpoint, session_id, call_tool(2, "echo", {"text": "x"}))
                assert gone.status_code == 404


async def test_a_get_stream_receives_what_another_worker_emits(
    shared_redis: RedisServer, redis_prefix: str, backend_name: str
) -> None:
    with anyio.fail_after(30):
        async with fleet_session(shared_redis, redis_prefix, backend_name) as (client, first, second, session_id):
            async with client.stream("GET", first, headers=headers(TOKEN_A, session_id)) as stream:
                assert stream.status_code == 200
                answer = answer_of(
                    await call(client, second, session_id, call_tool(1, "announce", {"text": "from-second"}))
                )
                assert answer["result"]["content"][0]["text"] == "announced"
                decoder = SSEDecoder()
                received: list[dict[str, Any]] = []
                async for chunk in stream.aiter_bytes():
                    received += [json.loads(event.data) for event in decoder.feed(chunk) if event.data]
                    if received:
                        break
            assert received[0]["method"] == "notifications/message"
            assert received[0]["params"]["data"] == "alpha:from-second"


async def test_an_answer_to_a_server_request_may_reach_the_other_worker(
    shared_redis: RedisServer, redis_prefix: str, backend_name: str
) -> None:
    with anyio.fail_after(30):
        async with fleet_session(shared_redis, redis_prefix, backend_name) as (client, first, second, session_id):
            answer_of(await call(client, second, session_id, call_tool(9, "echo", {"text": "adopt"})))
            body = call_tool(1, "ask")
            async with client.stream("POST", first, json=body, headers=headers(TOKEN_A, session_id)) as stream:
                decoder = SSEDecoder()
                messages: list[dict[str, Any]] = []
                async for chunk in stream.aiter_bytes():
                    for event in decoder.feed(chunk):
                        if not event.data:
                            continue
                        message = json.loads(event.data)
                        messages.append(message)
                        if message.get("method") == "elicitation/create":
                            reply = {
                                "jsonrpc": "2.0",
                                "id": message["id"],
                                "result": {"action": "accept", "content": {"answer": "42"}},
                            }
                            forwarded = await call(client, second, session_id, reply)
                            assert forwarded.status_code == 202
            assert messages[-1]["result"]["content"][0]["text"] == "accept:42"


async def test_last_event_id_replays_on_the_other_worker(
    shared_redis: RedisServer, redis_prefix: str, backend_name: str
) -> None:
    with anyio.fail_after(30):
        async with fleet_session(shared_redis, redis_prefix, backend_name) as (client, first, second, session_id):
            response = await call(client, first, session_id, call_tool(1, "progress", {"steps": 3}, progress_token="p"))
            decoder = SSEDecoder()
            events = [event for event in decoder.feed(response.content) if event.id and event.data]
            assert [json.loads(e.data).get("method") for e in events][:3] == ["notifications/progress"] * 3
            first_progress = events[0].id
            assert first_progress is not None
            resumed = await client.get(
                second, headers=headers(TOKEN_A, session_id, **{"last-event-id": first_progress})
            )
            assert resumed.status_code == 200
            replayed = sse_messages(resumed.text)
            assert [m.get("params", {}).get("progress") for m in replayed[:2]] == [2, 3]
            assert replayed[-1]["result"]["content"][0]["text"] == "done 3"


async def test_a_worker_holding_the_session_makes_no_redis_round_trip(
    shared_redis: RedisServer, redis_prefix: str, backend_name: str
) -> None:
    async def commands() -> int:
        async with coredis.Redis.from_url(shared_redis.url, decode_responses=True) as redis:
            stats = await redis.info("commandstats")
        return sum(int(v["calls"]) for k, v in stats.items() if k.startswith("cmdstat_") and isinstance(v, dict))

    with anyio.fail_after(30):
        # JSON answers: no event is stored (an SSE answer's events go to the event store: replay).
        # No roster beat (background, every `heartbeat` seconds) falls among the requests counted.
        workers = two_workers(shared_redis.url, redis_prefix, backend_name, json_response=True, heartbeat=3600.0)
        async with workers as (first, _), httpx.AsyncClient() as client:
            session_id = await open_session(client, first)
            # What counting itself costs (a connection's handshake, INFO), measured with nothing between.
            overhead = -(await commands()) + await commands()
            before = await commands()
            for n in range(20):
                response = await client.post(
                    first, json=request(n + 1, "tools/list"), headers=headers(TOKEN_A, session_id)
                )
                assert response.status_code == 200
                assert "tools" in response.json()["result"]
            assert await commands() - before == overhead


async def as_a_client_retries(attempt: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
    """Sends again after each 503, waiting what its Retry-After says (as clients do); ten tries at most."""
    for _ in range(10):
        response = await attempt()
        if response.status_code != 503:
            return response
        await anyio.sleep(float(response.headers["retry-after"]))
    return response


async def both_listen_again(url: str, prefix: str) -> None:
    channel = f"{prefix}:bus:" + json.dumps(["alpha", "sessions"], separators=(",", ":"))
    async with coredis.Redis.from_url(url, decode_responses=True) as redis:
        # Observable only in Redis: polled, at most 10 s.
        for _ in range(200):
            if (await redis.pubsub_numsub(channel)).get(channel, 0) >= 2:
                return
            await anyio.sleep(0.05)
    raise AssertionError("the workers did not subscribe again")


async def test_redis_stopped_and_restarted_mid_run(
    redis_server: RedisServer, redis_prefix: str, backend_name: str
) -> None:
    """Held sessions keep working without Redis; what needs it gets 503 with Retry-After within 2 s;
    once redis-server is back the fleet adopts, records and delivers across workers again."""
    with anyio.fail_after(60):
        workers = two_workers(redis_server.url, redis_prefix, backend_name, json_response=True)
        async with workers as (first, second), httpx.AsyncClient(timeout=10) as client:
            held = await open_session(client, first)
            redis_server.stop()
            answer = answer_of(await call(client, first, held, call_tool(1, "echo", {"text": "held"})))
            assert answer["result"]["content"][0]["text"] == "alpha:held"
            # A message for the session's GET stream, which no worker can be asked to carry: dropped.
            answer = answer_of(await call(client, first, held, call_tool(6, "announce", {"text": "lost"})))
            assert (answer["result"]["content"][0]["text"], answer["result"]["isError"]) == ("announced", False)
            for attempt in (
                client.post(second, json=call_tool(2, "echo", {"text": "x"}), headers=headers(TOKEN_A, held)),
                client.post(second, json=initialize(0, LEGACY), headers=headers(TOKEN_A)),
            ):
                started = anyio.current_time()
                refused = await attempt
                assert refused.status_code == 503
                assert refused.headers["retry-after"] == "1"
                assert anyio.current_time() - started < 2.0
            redis_server.start()
            # A restart without persistence lost the record: adopting that session elsewhere is 404
            # (after 503s while the worker reconnects, which a client retries after Retry-After).
            lost = await as_a_client_retries(lambda: call(client, second, held, call_tool(3, "echo", {"text": "x"})))
            assert lost.status_code == 404
            fresh = await open_session(client, first)
            again = call_tool(4, "echo", {"text": "again"})
            answer = answer_of(await as_a_client_retries(lambda: call(client, second, fresh, again)))
            assert answer["result"]["content"][0]["text"] == "alpha:again"
            # Both workers listen to the tenant's channel again before the DELETE that must reach both.
            await both_listen_again(redis_server.url, redis_prefix)
            deleted = await client.delete(second, headers=headers(TOKEN_A, fresh))
            assert deleted.status_code == 200
            gone = await call(client, first, fresh, call_tool(5, "echo", {"text": "x"}))
            assert gone.status_code == 404


def id_fields(body: bytes) -> list[str]:
    """The `id:` fields of an SSE body, as sent (a decoder would carry the last one over to later events)."""
    return [line[3:].strip().decode() for line in body.split(b"\n") if line.startswith(b"id:")]


async def read_until(chunks: AsyncIterator[bytes], marker: bytes) -> bytes:
    """What a streaming response sends up to and including the first chunk that completes `marker`."""
    received = b""
    while marker not in received:
        received += await chunks.__anext__()
    return received


async def test_sse_answers_and_the_get_stream_of_a_held_session_go_on_while_redis_is_down(
    redis_server_factory: Callable[..., RedisServer], redis_prefix: str, backend_name: str
) -> None:
    """Issue 13's "sessions a worker holds keep working", on SSE: while redis-server is down, the answers
    and the GET stream of a session the worker holds go on, their events without ids (not stored, so
    nothing a `Last-Event-ID` could point at); a resumption gets 503 with Retry-After within 2 s. Once
    Redis is back with its data, events carry ids again and replay on either worker, those stored
    before the outage included."""
    redis = redis_server_factory(persistent=True)
    with anyio.fail_after(60):
        async with fleet_session(redis, redis_prefix, backend_name) as (client, first, second, held):
            before = await call(client, first, held, call_tool(1, "progress", {"steps": 1}, progress_token="p"))
            stored = id_fields(before.content)
            assert len(stored) == 3  # priming, progress, answer
            async with client.stream("GET", first, headers=headers(TOKEN_A, held)) as listening:
                assert listening.status_code == 200
                chunks = listening.aiter_bytes()
                redis.stop()

                started = anyio.current_time()
                during = await call(client, first, held, call_tool(2, "progress", {"steps": 2}, progress_token="p"))
                assert anyio.current_time() - started < 2.0
                assert during.headers["content-type"].startswith("text/event-stream")
                answered = sse_messages(during.text)
                assert [m["params"]["progress"] for m in answered[:-1]] == [1, 2]
                assert answered[-1]["result"]["content"][0]["text"] == "done 2"
                assert id_fields(during.content) == []

                answer_of(await call(client, first, held, call_tool(3, "announce", {"text": "down"})))
                received = await read_until(chunks, b"alpha:down")
                assert len(id_fields(received)) == 1  # the priming event's, sent before the outage

                started = anyio.current_time()
                refused = await client.get(first, headers=headers(TOKEN_A, held, **{"last-event-id": stored[0]}))
                assert anyio.current_time() - started < 2.0
                assert (refused.status_code, refused.headers["retry-after"]) == (503, "1")
                assert refused.json()["error"]["code"] == -32000

                redis.start()
                after = await call(client, first, held, call_tool(4, "progress", {"steps": 1}, progress_token="p"))
                assert len(set(id_fields(after.content))) == 3
                answer_of(await call(client, first, held, call_tool(5, "announce", {"text": "back"})))
                assert len(id_fields(await read_until(chunks, b"alpha:back"))) == 1

            # Stored before the outage, and kept by Redis: replayed by the worker holding the session.
            resumed = await client.get(first, headers=headers(TOKEN_A, held, **{"last-event-id": stored[0]}))
            assert [m.get("id") for m in sse_messages(resumed.text)] == [None, 1]
            # Stored once it was back: replayed by the other worker too, which adopts the session (a 503
            # while it subscribes again is retried, as a client does).
            since = id_fields(after.content)[0]
            resumed = await as_a_client_retries(
                lambda: client.get(second, headers=headers(TOKEN_A, held, **{"last-event-id": since}))
            )
            assert resumed.status_code == 200
            assert [m.get("id") for m in sse_messages(resumed.text)] == [None, 4]
