"""The contract every `EventStore` asgi_mcp serves resumability from keeps. Subscribe with a test class
that provides `store_factory`.

`store_factory(**bounds)` opens a handle on the test's one store, as another worker would (in memory:
the same object; on Redis: a new client on the same server and key prefix). The guarantees are the
in-memory store's: event ids name their stream and cannot be guessed, a replay returns exactly the
later events of that one stream, and through `EventLog` a session never replays another's events.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import pytest
from mcp.server.streamable_http import EventMessage, EventStore
from mcp.types import JSONRPCMessage, jsonrpc_message_adapter

from asgi_mcp._ports.replay import EventLog

StoreFactory = Callable[..., AbstractAsyncContextManager[EventStore]]
TIMEOUT = 10.0  # bounds every test: a remote store may be slow, never stuck


def note(n: int, text: str = "") -> dict[str, Any]:
    params: dict[str, Any] = {"progressToken": "t", "progress": n}
    if text:
        params["message"] = text
    return {"jsonrpc": "2.0", "method": "notifications/progress", "params": params}


def model(message: dict[str, Any]) -> JSONRPCMessage:
    return jsonrpc_message_adapter.validate_python(message)


def as_dict(message: JSONRPCMessage) -> dict[str, Any]:
    return message.model_dump(mode="json", by_alias=True, exclude_unset=True)  # type: ignore[no-any-return]


async def replay(store: EventStore, last_event_id: str) -> tuple[str | None, list[EventMessage]]:
    seen: list[EventMessage] = []

    async def collect(event: EventMessage) -> None:
        seen.append(event)

    return await store.replay_events_after(last_event_id, collect), seen


class EventStoreContract:
    pytestmark = pytest.mark.anyio

    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        raise NotImplementedError("the implementation's test class provides store_factory")

    async def test_ids_name_their_stream_and_replay_returns_exactly_the_later_events(
        self, store_factory: StoreFactory
    ) -> None:
        with anyio.fail_after(TIMEOUT):
            async with store_factory() as store:
                tag = EventLog.new_tag()
                ids = [await store.store_event(f"{tag}/s1", model(note(n))) for n in range(5)]
                await store.store_event(f"{tag}/s2", model(note(99)))  # another stream, same session
                assert len(set(ids)) == 5
                assert all(event_id.startswith(f"{tag}/s1#") for event_id in ids)
                for k in range(5):
                    stream_id, events = await replay(store, ids[k])
                    assert stream_id == f"{tag}/s1"
                    assert [e.event_id for e in events] == ids[k + 1 :]
                    assert [as_dict(e.message) for e in events] == [note(n) for n in range(k + 1, 5)]

    async def test_another_handle_replays_what_one_stored(self, store_factory: StoreFactory) -> None:
        """Two workers on one store: written on A, resumed on B."""
        with anyio.fail_after(TIMEOUT):
            async with store_factory() as writer, store_factory() as reader:
                stream = f"{EventLog.new_tag()}/req"
                priming = await writer.store_event(stream, None)
                stored = [await writer.store_event(stream, model(note(n, 'ü ✓ "q"'))) for n in range(3)]
                stream_id, events = await replay(reader, priming)
                assert stream_id == stream
                assert [e.event_id for e in events] == stored
                assert [as_dict(e.message) for e in events] == [note(n, 'ü ✓ "q"') for n in range(3)]

    async def test_priming_events_are_never_replayed(self, store_factory: StoreFactory) -> None:
        with anyio.fail_after(TIMEOUT):
            async with store_factory() as store:
                stream = f"{EventLog.new_tag()}/s"
                first_priming = await store.store_event(stream, None)
                real = await store.store_event(stream, model(note(1)))
                await store.store_event(stream, None)  # a later priming event (a reconnection's)
                _, events = await replay(store, first_priming)
                assert [e.event_id for e in events] == [real]

    async def test_the_last_event_replays_as_nothing(self, store_factory: StoreFactory) -> None:
        with anyio.fail_after(TIMEOUT):
            async with store_factory() as store:
                stream = f"{EventLog.new_tag()}/s"
                last = await store.store_event(stream, model(note(1)))
                assert await replay(store, last) == (stream, [])

    @pytest.mark.parametrize("bogus", ["", "nohash", "#", "{tag}/s#", "{tag}/s#x", "{tag}/s#-1", "{tag}/s#1#"])
    async def test_malformed_ids_replay_nothing(self, store_factory: StoreFactory, bogus: str) -> None:
        with anyio.fail_after(TIMEOUT):
            async with store_factory() as store:
                tag = EventLog.new_tag()
                await store.store_event(f"{tag}/s", model(note(1)))
                assert await replay(store, bogus.format(tag=tag)) == (None, [])

    async def test_an_unknown_stream_replays_nothing(self, store_factory: StoreFactory) -> None:
        """A real id's suffix under a stream that does not exist (forged, or expired): nothing."""
        with anyio.fail_after(TIMEOUT):
            async with store_factory() as store:
                tag = EventLog.new_tag()
                real = await store.store_event(f"{tag}/s", model(note(1)))
                await store.store_event(f"{tag}/s", model(note(2)))
                suffix = real.rpartition("#")[2]
                for forged in (f"{tag}/other#{suffix}", f"{EventLog.new_tag()}/s#{suffix}", f"{tag}#{suffix}"):
                    assert await replay(store, forged) == (None, [])

    async def test_events_per_stream_are_bounded_oldest_first(self, store_factory: StoreFactory) -> None:
        with anyio.fail_after(TIMEOUT):
            async with store_factory(max_events_per_stream=3) as store:
                stream = f"{EventLog.new_tag()}/s"
                ids = [await store.store_event(stream, model(note(n))) for n in range(10)]
                _, events = await replay(store, ids[0])
                assert [e.event_id for e in events] == ids[-3:]  # the newest (the response) always survives
                _, events = await replay(store, ids[7])
                assert [e.event_id for e in events] == ids[8:]

    async def test_many_concurrent_writers_lose_nothing_and_keep_each_writers_order(
        self, store_factory: StoreFactory
    ) -> None:
        writers, per_writer = 16, 12
        tag = EventLog.new_tag()
        streams = [f"{tag}/shared", f"{tag}/other"]
        written: dict[str, list[tuple[int, int, str]]] = {stream: [] for stream in streams}
        with anyio.fail_after(TIMEOUT):
            async with store_factory() as store:
                primings = {stream: await store.store_event(stream, None) for stream in streams}

                async def write(writer: int) -> None:
                    # Each writer opens its own handle (another worker) for half the writers.
                    async with store_factory() as own:
                        target = own if writer % 2 else store
                        for n in range(per_writer):
                            stream = streams[n % 2]
                            event_id = await target.store_event(stream, model(note(writer * 1000 + n)))
                            written[stream].append((writer, n, event_id))

                async with anyio.create_task_group() as tg:
                    for writer in range(writers):
                        tg.start_soon(write, writer)

                all_ids = [event_id for entries in written.values() for _, _, event_id in entries]
                assert len(all_ids) == len(set(all_ids)) == writers * per_writer
                for stream in streams:
                    stream_id, events = await replay(store, primings[stream])
                    assert stream_id == stream
                    assert sorted(e.event_id for e in events) == sorted(eid for _, _, eid in written[stream])
                    progress = [as_dict(e.message)["params"]["progress"] for e in events]
                    for writer in range(writers):  # each writer's events replay in the order it wrote them
                        own = [p for p in progress if p // 1000 == writer]
                        assert own == sorted(own)

    async def test_a_session_never_replays_another_sessions_events(self, store_factory: StoreFactory) -> None:
        """Through EventLog (what asgi_mcp uses): sessions of any tenant, on any worker, are apart."""
        with anyio.fail_after(TIMEOUT):
            async with store_factory() as store_a, store_factory() as store_b:
                alice_log, mallory_log = EventLog(store_a), EventLog(store_b)
                alice, mallory = EventLog.new_tag(), EventLog.new_tag()
                first = await alice_log.store(f"{alice}/req", note(1), json.dumps(note(1)))
                second = await alice_log.store(f"{alice}/req", note(2), json.dumps(note(2)))
                await mallory_log.store(f"{mallory}/req", note(7), json.dumps(note(7)))
                assert await mallory_log.replay(first, mallory) is None  # her id, his session
                assert await mallory_log.replay(first, alice[:-1]) is None  # a prefix of her tag
                found = await mallory_log.replay(first, alice)  # her session, on another worker
                assert found is not None
                stream_id, events = found
                assert stream_id == f"{alice}/req"
                assert [e.event_id for e in events] == [second]
                assert [json.loads(e.data) for e in events] == [note(2)]

    async def test_a_tag_that_is_a_prefix_of_another_is_not_its_owner(self, store_factory: StoreFactory) -> None:
        with anyio.fail_after(TIMEOUT):
            async with store_factory() as store:
                log = EventLog(store)
                first = await log.store("abcd/req", note(1), json.dumps(note(1)))
                await log.store("abcd/req", note(2), json.dumps(note(2)))
                assert await log.replay(first, "abc") is None
                assert await log.replay(first, "abcd") is not None
