"""Event storage for resumability: the bounded in-memory store and the session-scoped EventLog."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.types import JSONRPCMessage, jsonrpc_message_adapter

from asgi_mcp import InMemoryEventStore, StoreUnavailable
from asgi_mcp._ports.replay import EventLog

pytestmark = pytest.mark.anyio


def note(n: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": "t", "progress": n}}


def model(message: dict[str, Any]) -> JSONRPCMessage:
    return jsonrpc_message_adapter.validate_python(message)


async def replay_raw(store: EventStore, last_event_id: str) -> tuple[str | None, list[EventMessage]]:
    seen: list[EventMessage] = []

    async def collect(event: EventMessage) -> None:
        seen.append(event)

    return await store.replay_events_after(last_event_id, collect), seen


class PlainStore(InMemoryEventStore):
    """A user's store: same storage, but EventLog must treat it as opaque (only the SDK's ABC).

    Like the SDK's reference store, it replays whatever id it is given, to whoever asks.
    """


class TestInMemoryEventStore:
    async def test_ids_name_their_stream_and_replay_after(self) -> None:
        store = InMemoryEventStore()
        ids = [await store.store_event("tag/s1", model(note(n))) for n in range(3)]
        assert ids == ["tag/s1#1", "tag/s1#2", "tag/s1#3"]
        stream_id, events = await replay_raw(store, ids[0])
        assert stream_id == "tag/s1"
        assert [e.event_id for e in events] == ids[1:]
        assert [e.message.model_dump(by_alias=True, exclude_none=True)["params"]["progress"] for e in events] == [1, 2]

    async def test_priming_events_are_not_replayed(self) -> None:
        store = InMemoryEventStore()
        priming = await store.store_event("tag/s", None)
        real = await store.store_event("tag/s", model(note(1)))
        _, events = await replay_raw(store, priming)
        assert [e.event_id for e in events] == [real]

    async def test_last_event_is_replayed_as_nothing(self) -> None:
        store = InMemoryEventStore()
        last = await store.store_event("tag/s", model(note(1)))
        assert await replay_raw(store, last) == ("tag/s", [])

    @pytest.mark.parametrize("bogus", ["", "nohash", "tag/s#", "tag/s#x", "unknown/s#1", "tag/s#-1"])
    async def test_unknown_or_malformed_ids_replay_nothing(self, bogus: str) -> None:
        store = InMemoryEventStore()
        await store.store_event("tag/s", model(note(1)))
        assert await replay_raw(store, bogus) == (None, [])

    async def test_events_per_stream_are_bounded_oldest_first(self) -> None:
        store = InMemoryEventStore(max_events_per_stream=3)
        ids = [await store.store_event("tag/s", model(note(n))) for n in range(10)]
        _, events = await replay_raw(store, ids[0])
        assert [e.event_id for e in events] == ids[-3:]  # the newest (the response) always survives

    async def test_streams_are_bounded_least_recently_written_first(self) -> None:
        store = InMemoryEventStore(max_streams=2)
        a = await store.store_event("t/a", model(note(1)))
        b = await store.store_event("t/b", model(note(1)))
        await store.store_event("t/a", model(note(2)))  # a is now the most recently written
        await store.store_event("t/c", model(note(1)))  # evicts b
        assert len(store) == 2
        assert (await replay_raw(store, b))[0] is None
        assert (await replay_raw(store, a))[0] == "t/a"

    async def test_discard_group_forgets_a_session(self) -> None:
        store = InMemoryEventStore()
        mine = await store.store_event("tag/a", model(note(1)))
        await store.store_event("tag/b", model(note(1)))
        other = await store.store_event("tag2/a", model(note(1)))
        store.discard_group("tag")
        assert len(store) == 1
        assert (await replay_raw(store, mine))[0] is None
        assert (await replay_raw(store, other))[0] == "tag2/a"
        store.discard_group("tag")  # idempotent

    @pytest.mark.parametrize(("events", "streams"), [(0, 1), (1, 0)])
    async def test_bounds_must_be_positive(self, events: int, streams: int) -> None:
        with pytest.raises(ValueError, match="must be positive"):
            InMemoryEventStore(max_events_per_stream=events, max_streams=streams)


class OutageStore(PlainStore):
    """A user's store whose backend can fail, with what `failure` says: `StoreUnavailable` is how the
    port says "unreachable"; anything else is a bug."""

    def __init__(self) -> None:
        super().__init__()
        self.failure: Exception | None = None

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        if self.failure is not None:
            raise self.failure
        return await super().store_event(stream_id, message)

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        if self.failure is not None:
            raise self.failure
        return await super().replay_events_after(last_event_id, send_callback)


@pytest.fixture(params=["builtin", "custom"])
def store(request: pytest.FixtureRequest) -> InMemoryEventStore:
    """The built-in store (EventLog's fast path) and a user store seen only through the SDK ABC."""
    return InMemoryEventStore() if request.param == "builtin" else PlainStore()


class TestEventLog:
    async def test_replays_own_stream(self, store: InMemoryEventStore) -> None:
        log = EventLog(store)
        tag = EventLog.new_tag()
        stream = f"{tag}/req"
        priming = await log.store(stream, None, None)
        first = await log.store(stream, note(1), json.dumps(note(1)))
        second = await log.store(stream, note(2), json.dumps(note(2)))
        found = await log.replay(priming, tag)
        assert found is not None
        stream_id, events = found
        assert stream_id == stream
        assert [e.event_id for e in events] == [first, second]
        assert [json.loads(e.data) for e in events] == [note(1), note(2)]

    async def test_another_sessions_tag_never_replays(self, store: InMemoryEventStore) -> None:
        log = EventLog(store)
        alice, mallory = EventLog.new_tag(), EventLog.new_tag()
        first = await log.store(f"{alice}/req", note(1), json.dumps(note(1)))
        await log.store(f"{alice}/req", note(2), json.dumps(note(2)))
        assert await log.replay(first, mallory) is None
        assert await log.replay(first, alice) is not None

    async def test_tag_prefix_is_not_enough(self, store: InMemoryEventStore) -> None:
        """Session "abc" must not read session "abcd"'s events: ownership is the whole tag segment."""
        log = EventLog(store)
        first = await log.store("abcd/req", note(1), json.dumps(note(1)))
        await log.store("abcd/req", note(2), json.dumps(note(2)))
        assert await log.replay(first, "abc") is None

    async def test_forget_drops_a_sessions_events(self) -> None:
        store = InMemoryEventStore()
        log = EventLog(store)
        tag = EventLog.new_tag()
        first = await log.store(f"{tag}/req", note(1), json.dumps(note(1)))
        log.forget(tag)
        assert await log.replay(first, tag) is None
        assert len(store) == 0

    async def test_tags_are_unguessable(self) -> None:
        tags = {EventLog.new_tag() for _ in range(1000)}
        assert len(tags) == 1000
        assert all(len(tag) >= 16 and "/" not in tag and "#" not in tag for tag in tags)

    async def test_an_unreachable_store_degrades_resumability_not_delivery(self) -> None:
        """Events written while the store is out of reach get no id (they go out without one), a replay
        needs the store (`StoreUnavailable`: 503), and the first write that works ends the degradation."""
        store = OutageStore()
        log = EventLog(store)
        tag = EventLog.new_tag()
        stream = f"{tag}/req"
        before = await log.store(stream, note(1), json.dumps(note(1)))
        assert before is not None
        assert not log.degraded
        store.failure = StoreUnavailable("event store")
        assert await log.store(stream, note(2), json.dumps(note(2))) is None
        assert await log.store(stream, None, None) is None
        assert log.degraded
        with pytest.raises(StoreUnavailable):
            await log.replay(before, tag)
        store.failure = None
        after = await log.store(stream, note(3), json.dumps(note(3)))
        assert after is not None
        assert not log.degraded
        found = await log.replay(before, tag)
        assert found is not None
        assert [(event.event_id, json.loads(event.data)) for event in found[1]] == [(after, note(3))]

    async def test_only_store_unavailable_counts_as_an_outage(self) -> None:
        store = OutageStore()
        log = EventLog(store)
        store.failure = RuntimeError("a bug in the store")
        with pytest.raises(RuntimeError):
            await log.store("tag/req", note(1), json.dumps(note(1)))
        assert not log.degraded
