"""`EventStore` on Redis Streams: `Last-Event-ID` replay on any worker that shares the Redis.

One stream key per (session, stream): `<prefix>:ev:{<session tag>}/<stream>`. asgi_mcp's stream ids
are `<secret session tag>/<random>`, so the key names the session that owns it (the tag in braces is
the cluster hash tag: a session's streams share a slot). Each append is one atomic script (XADD with
an exact MAXLEN, then PEXPIRE), each replay one (EXISTS, PEXPIRE, XRANGE after the id): one round trip.

Event ids are `<stream id>#<stream entry id>`, like the in-memory store's `<stream id>#<seq>`: they
name their stream, so a replay reads that one stream and nothing else, and `EventLog` refuses an id
whose stream another session owns before asking the store at all.

Redis out of reach: each call fails as `StoreUnavailable` within `timeout` (at once when the port
refuses connections, as while redis-server is down or restarting). `EventLog` then sends events
without ids and answers a resumption with 503; the connection logs both changes, once each.
"""

from __future__ import annotations

import re
from typing import Any, Final, cast

import coredis
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.types import JSONRPCMessage, jsonrpc_message_adapter

from ..._core.errors import ConfigurationError
from ..._core.jsonrpc import dumps
from ..._ports.replay import ReplayedEvent
from .connection import DEFAULT_TIMEOUT, RedisConnection, require_prefix

__all__ = ["RedisEventStore"]

_SEPARATOR: Final = "#"
_ENTRY_ID: Final = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
# What an outage costs, as the log says it (`EventLog`: resumability degrades, not the session).
_WHILE_DOWN: Final = "out of use: SSE events go out without ids (not resumable) and resumptions get 503"

# KEYS[1] stream key; ARGV: max events, JSON text ("" for a priming event), TTL in ms.
_APPEND: Final = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '*', 'd', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return id
"""
# KEYS[1] stream key; ARGV: the last entry id seen, TTL in ms. A missing stream answers nil, an
# existing one its later entries (reading it counts as use: its TTL starts again).
_REPLAY: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+')
"""


class RedisEventStore(EventStore):
    """A shared, bounded `EventStore` on Redis Streams (needs `asgi-mcp[redis]`).

    Args:
        redis: a URL (`redis://[:password@]host:port/db`, `rediss://...`) or a `coredis.Redis` with
            `decode_responses=True`.
        prefix: the first part of every key (one per deployment sharing a Redis).
        max_events_per_stream: events kept per stream; the oldest are trimmed first (exactly).
        ttl: seconds a stream lives after its last write or replay. Keep it at least twice the
            app's `session_idle_timeout`, so an idle session's events outlive the session.
        timeout: seconds a Redis call may take before it counts as unreachable: an event then goes
            out without an id, a resumption gets 503 with `Retry-After`.

    Open it before use: `McpApp` does so in its lifespan; elsewhere `async with store:`.
    """

    def __init__(
        self,
        redis: str | coredis.Redis[str],
        *,
        prefix: str = "asgi_mcp",
        max_events_per_stream: int = 1024,
        ttl: float = 3600.0,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if max_events_per_stream < 1 or ttl <= 0:
            raise ConfigurationError("RedisEventStore bounds must be positive")
        require_prefix("RedisEventStore", prefix)
        self.connection = RedisConnection(redis, timeout=timeout, while_down=_WHILE_DOWN)
        self._prefix = f"{prefix}:ev:"
        self._max_events = str(max_events_per_stream)
        self.ttl = ttl
        self._ttl_ms = str(max(1, round(ttl * 1000)))
        client = self.connection.client
        self._append = client.register_script(_APPEND)
        self._replay = client.register_script(_REPLAY)

    async def __aenter__(self) -> RedisEventStore:
        await self.connection.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.connection.__aexit__(*exc_info)

    def key(self, stream_id: str) -> str:
        """The Redis key of a stream: the session part (before the first "/") as the hash tag."""
        group, slash, rest = stream_id.partition("/")
        return f"{self._prefix}{{{group}}}{slash}{rest}"

    # -- what asgi_mcp's EventLog calls (JSON text in and out: no model round trip) ---------------

    async def store_json(self, stream_id: str, data: str | None) -> str:
        with self.connection.guard("event store"):
            entry_id = await self._append.execute([self.key(stream_id)], [self._max_events, data or "", self._ttl_ms])
        return f"{stream_id}{_SEPARATOR}{_text(entry_id)}"

    async def json_events_after(self, last_event_id: str) -> tuple[str, list[ReplayedEvent]] | None:
        stream_id, sep, entry_id = last_event_id.rpartition(_SEPARATOR)
        if not sep or not stream_id or _ENTRY_ID.fullmatch(entry_id) is None:
            return None
        with self.connection.guard("event store"):
            entries = await self._replay.execute([self.key(stream_id)], [entry_id, self._ttl_ms])
        if entries is None:
            return None
        events: list[ReplayedEvent] = []
        # XRANGE's reply: [[entry id, [field, value]], ...]; the one field is "d".
        for later_id, fields in cast("list[tuple[str | bytes, list[str | bytes]]]", entries):
            data = _text(fields[1])
            if data:  # priming events carry no message: nothing to replay
                events.append(ReplayedEvent(f"{stream_id}{_SEPARATOR}{_text(later_id)}", data))
        return stream_id, events

    # -- the SDK's EventStore ABC ---------------------------------------------------------------

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        data = None if message is None else dumps(message.model_dump(mode="json", by_alias=True, exclude_unset=True))
        return await self.store_json(stream_id, data)

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        found = await self.json_events_after(last_event_id)
        if found is None:
            return None
        stream_id, events = found
        for event in events:
            await send_callback(EventMessage(jsonrpc_message_adapter.validate_json(event.data), event.event_id))
        return stream_id


def _text(value: Any) -> str:
    # A client the caller built may answer bytes; ours answers str (decode_responses=True).
    return value.decode() if isinstance(value, bytes) else str(value)
