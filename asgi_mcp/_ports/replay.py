"""Event storage for SSE resumability (legacy era): a bounded in-memory store and the session-scoped log.

`InMemoryEventStore` implements the SDK's `EventStore` ABC, so a user's store (Redis, a database)
plugs in the same way. `EventLog` is what sessions use: it scopes every stream id under a secret
per-session tag and refuses to replay a stream the session does not own, which is the guarantee
the SDK's shared store lacks (it replays one session's events to any session presenting their id).

A store that cannot reach its backend (Redis down or restarting) raises `StoreUnavailable`, within a
bound of its own (`RedisEventStore`: its `timeout`), and logs the change itself, once; any other
exception is a bug and is not taken for an outage. `EventLog` then degrades resumability, not the
session: an event it could not store goes out without an SSE id (no `Last-Event-ID` could replay
it), and the next event is offered to the store again. A replay needs the store: it raises
`StoreUnavailable` (503 with `Retry-After`).
"""

from __future__ import annotations

import secrets
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol, runtime_checkable

from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.types import JSONRPCMessage, jsonrpc_message_adapter

from .._core.errors import StoreUnavailable
from .._core.jsonrpc import dumps

__all__ = ["InMemoryEventStore"]

_SEPARATOR: Final = "#"


@dataclass(slots=True)
class _Stored:
    seq: int
    event_id: str
    # Either the JSON text (stored by asgi_mcp itself) or a model (stored through the SDK's ABC).
    payload: str | JSONRPCMessage | None


class InMemoryEventStore(EventStore):
    """A bounded, process-local `EventStore`.

    Args:
        max_events_per_stream: events kept per stream; older ones are dropped first, so a client
            that reconnects after more than this many events misses the oldest (it still gets the
            response, which is always the newest event of a request stream).
        max_streams: streams kept in all; the least recently written stream is evicted first.

    Event ids are `<stream id>#<sequence>`: they name their stream (spec 2025-11-25, resumability),
    and asgi_mcp's stream ids carry a random component, so ids cannot be guessed.
    """

    def __init__(self, *, max_events_per_stream: int = 1024, max_streams: int = 100_000) -> None:
        if max_events_per_stream < 1 or max_streams < 1:
            raise ValueError("InMemoryEventStore bounds must be positive")
        self._max_events = max_events_per_stream
        self._max_streams = max_streams
        self._streams: OrderedDict[str, deque[_Stored]] = OrderedDict()
        # One sequence for the whole store, so an id is never issued twice: a stream evicted (or
        # discarded) and written again continues past every id it handed out before.
        self._seq = 0
        # Stream ids grouped by the part before their first "/" (asgi_mcp puts a per-session tag
        # there), so a session's streams are dropped in one step when it ends.
        self._groups: dict[str, set[str]] = {}

    def append_raw(self, stream_id: str, payload: str | JSONRPCMessage | None) -> str:
        """Store a payload as is (JSON text from asgi_mcp, or a model) and return its event id."""
        events = self._streams.get(stream_id)
        if events is None:
            events = deque[_Stored](maxlen=self._max_events)
            self._streams[stream_id] = events
            self._groups.setdefault(stream_id.partition("/")[0], set()).add(stream_id)
            while len(self._streams) > self._max_streams:
                evicted, _ = self._streams.popitem(last=False)
                self._ungroup(evicted)
        else:
            self._streams.move_to_end(stream_id)
        self._seq += 1
        event_id = f"{stream_id}{_SEPARATOR}{self._seq}"
        events.append(_Stored(self._seq, event_id, payload))
        return event_id

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        return self.append_raw(stream_id, message)

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        found = self.events_after(last_event_id)
        if found is None:
            return None
        stream_id, events = found
        for stored in events:
            if stored.payload is None:
                continue
            message = (
                jsonrpc_message_adapter.validate_json(stored.payload)
                if isinstance(stored.payload, str)
                else stored.payload
            )
            await send_callback(EventMessage(message, stored.event_id))
        return stream_id

    def events_after(self, last_event_id: str) -> tuple[str, list[_Stored]] | None:
        stream_id, sep, seq_text = last_event_id.rpartition(_SEPARATOR)
        # ASCII digits only: `isdigit` alone admits "²", which `int` refuses.
        if not sep or not seq_text.isascii() or not seq_text.isdigit():
            return None
        events = self._streams.get(stream_id)
        if events is None:
            return None
        seq = int(seq_text)
        return stream_id, [stored for stored in events if stored.seq > seq]

    def _ungroup(self, stream_id: str) -> None:
        group_key = stream_id.partition("/")[0]
        group = self._groups.get(group_key)
        if group is not None:
            group.discard(stream_id)
            if not group:
                del self._groups[group_key]

    def discard_group(self, group_key: str) -> None:
        """Forget every stream whose id starts with `group_key + "/"` (a session that ended)."""
        for stream_id in self._groups.pop(group_key, ()):
            self._streams.pop(stream_id, None)

    def __len__(self) -> int:
        return len(self._streams)


@dataclass(slots=True, frozen=True)
class ReplayedEvent:
    event_id: str
    data: str  # JSON text; empty for the priming event


@runtime_checkable
class JsonEventStore(Protocol):
    """An `EventStore` that also takes and gives JSON text, so `EventLog` skips the SDK's model round
    trip (validate on store, dump on replay). Its event ids must name their stream as
    `<stream id>#<suffix>`, so ownership is checked before the store is asked (`RedisEventStore`).
    Both raise `StoreUnavailable` when the store cannot be reached (see the module's docstring)."""

    async def store_json(self, stream_id: str, data: str | None) -> str: ...

    async def json_events_after(self, last_event_id: str) -> tuple[str, list[ReplayedEvent]] | None: ...


class EventLog:
    """The session-facing side of an event store: scoped stream ids, fast paths for the built-in store
    and for stores that speak JSON text, and what an unreachable store costs (see the module's docstring).

    `store(stream_id, message, data)` returns the new event's id, or None when the store could not be
    reached: the event is then sent without an id. `degraded`: the latest write failed (the store counts
    as unreachable until one succeeds).
    """

    __slots__ = ("_fast", "_json", "_store", "degraded", "store")

    # An attribute, not a method: `_store_reachable` while the store answers, `_store_degraded` after a
    # failed write, so the usual path carries no check of its own beyond one try/except.
    store: Callable[[str, dict[str, Any] | None, str | None], Awaitable[str | None]]

    def __init__(self, store: EventStore) -> None:
        self._store = store
        self._fast = store if type(store) is InMemoryEventStore else None
        self._json = store if self._fast is None and isinstance(store, JsonEventStore) else None
        self.degraded = False
        self.store = self._store_reachable

    @staticmethod
    def new_tag() -> str:
        """A per-session secret prefix for stream ids."""
        return secrets.token_urlsafe(12)

    async def _store_reachable(self, stream_id: str, message: dict[str, Any] | None, data: str | None) -> str | None:
        if self._fast is not None:
            return self._fast.append_raw(stream_id, data if message is not None else None)
        try:
            return await self._write(stream_id, message, data)
        except StoreUnavailable:  # logged by the store, once
            self.degraded = True
            self.store = self._store_degraded
            return None

    async def _store_degraded(self, stream_id: str, message: dict[str, Any] | None, data: str | None) -> str | None:
        """`store` after a failed write: each event is offered again (a store that fails fast costs
        little); the first one stored ends the degradation."""
        try:
            event_id = await self._write(stream_id, message, data)
        except StoreUnavailable:
            return None
        self.degraded = False
        self.store = self._store_reachable
        return event_id

    async def _write(self, stream_id: str, message: dict[str, Any] | None, data: str | None) -> str:
        if self._json is not None:
            return await self._json.store_json(stream_id, data if message is not None else None)
        model = None if message is None else jsonrpc_message_adapter.validate_python(message, by_name=False)
        return await self._store.store_event(stream_id, model)

    async def replay(self, last_event_id: str, tag: str) -> tuple[str, list[ReplayedEvent]] | None:
        """Events after `last_event_id`, only if its stream belongs to the session with `tag`."""
        prefix = tag + "/"
        if self._fast is not None:
            # The built-in store's ids name their stream, so ownership is checked before any lookup.
            if not last_event_id.startswith(prefix):
                return None
            found = self._fast.events_after(last_event_id)
            if found is None:
                return None
            stream_id, stored = found
            return stream_id, [
                ReplayedEvent(s.event_id, s.payload if isinstance(s.payload, str) else _dump_model(s.payload))
                for s in stored
                if s.payload is not None
            ]
        if self._json is not None:
            if not last_event_id.startswith(prefix):
                return None
            found_json = await self._json.json_events_after(last_event_id)
            if found_json is None or not found_json[0].startswith(prefix):
                return None
            return found_json
        collected: list[ReplayedEvent] = []

        async def collect(event: EventMessage) -> None:
            # Buffer, never send: the stream's owner is known only once the store returns.
            collected.append(ReplayedEvent(event.event_id or "", _dump_model(event.message)))

        owner = await self._store.replay_events_after(last_event_id, collect)
        if owner is None or not owner.startswith(prefix):
            return None
        return owner, collected

    def forget(self, tag: str) -> None:
        """Drop a finished session's events from the built-in store (other stores expire their own)."""
        if self._fast is not None:
            self._fast.discard_group(tag)


def _dump_model(message: JSONRPCMessage) -> str:
    return dumps(message.model_dump(mode="json", by_alias=True, exclude_unset=True))
