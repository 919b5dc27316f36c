"""`SessionDirectory` on Redis: each session a hash with a TTL, each tenant a set of its session ids.

`<prefix>:sess:<session id>` holds `record` (the record's JSON text), `tenant` (the tenant, encoded
so that None, "" and "a:b" stay apart) and `last_seen` (kept apart from the JSON so `touch` moves it
forward atomically without re-encoding the record). `<prefix>:tenant:<encoded tenant>` is the set of
the tenant's session ids. Every method is one script: one round trip, and no reader ever sees a
session filed under two tenants. Single node or replicas (the scripts touch keys of two sessions'
slots; a cluster needs the tenant in the session key, which `lookup` by id alone cannot know).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Final, cast

import coredis

from ..._core.errors import ConfigurationError
from ..._ports.session_directory import SessionRecord
from .connection import DEFAULT_TIMEOUT, RedisConnection, require_prefix

__all__ = ["RedisSessionDirectory"]

_WHAT: Final = "session directory"

# KEYS: session hash, new tenant's set; ARGV: record JSON, encoded tenant, last_seen, ttl ms, tenant-set prefix, id.
_RECORD: Final = """
local old = redis.call('HGET', KEYS[1], 'tenant')
if old and old ~= ARGV[2] then redis.call('SREM', ARGV[5] .. old, ARGV[6]) end
redis.call('HSET', KEYS[1], 'record', ARGV[1], 'tenant', ARGV[2], 'last_seen', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('SADD', KEYS[2], ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[4], 'GT')
if redis.call('PTTL', KEYS[2]) < 0 then redis.call('PEXPIRE', KEYS[2], ARGV[4]) end
return 1
"""
# KEYS: session hash; ARGV: now, ttl ms. Never moves last_seen back; a touch is activity: TTL renewed.
_TOUCH: Final = """
local seen = redis.call('HGET', KEYS[1], 'last_seen')
if not seen then return 0 end
if tonumber(ARGV[1]) > tonumber(seen) then redis.call('HSET', KEYS[1], 'last_seen', ARGV[1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
# KEYS: session hash; ARGV: tenant-set prefix, id.
_FORGET: Final = """
local tenant = redis.call('HGET', KEYS[1], 'tenant')
if not tenant then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', ARGV[1] .. tenant, ARGV[2])
return 1
"""
# KEYS: tenant set; ARGV: session-hash prefix. Members whose hash expired are dropped on the way.
_SESSIONS_OF: Final = """
local alive = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. id) == 1 then table.insert(alive, id)
  else redis.call('SREM', KEYS[1], id) end
end
return alive
"""


def _encode_tenant(tenant_id: str | None) -> str:
    return "-" if tenant_id is None else "=" + tenant_id


class RedisSessionDirectory:
    """A `SessionDirectory` every worker sharing the Redis reads (needs `asgi-mcp[redis]`).

    Args:
        redis: a URL or a `coredis.Redis` with `decode_responses=True`.
        prefix: the first part of every key.
        ttl: seconds a record lives after it was recorded or touched: keep it above the app's
            `session_idle_timeout` (a worker touches the sessions it holds well within it).
        timeout: seconds a call may take before it fails as `StoreUnavailable` (503).
    """

    def __init__(
        self,
        redis: str | coredis.Redis[str],
        *,
        prefix: str = "asgi_mcp",
        ttl: float = 3600.0,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if ttl <= 0:
            raise ConfigurationError("RedisSessionDirectory ttl must be positive")
        require_prefix("RedisSessionDirectory", prefix)
        self.connection = RedisConnection(redis, timeout=timeout)
        self._session_prefix = f"{prefix}:sess:"
        self._tenant_prefix = f"{prefix}:tenant:"
        self._ttl_ms = str(max(1, round(ttl * 1000)))
        client = self.connection.client
        self._record = client.register_script(_RECORD)
        self._touch = client.register_script(_TOUCH)
        self._forget = client.register_script(_FORGET)
        self._sessions_of = client.register_script(_SESSIONS_OF)

    async def __aenter__(self) -> RedisSessionDirectory:
        await self.connection.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.connection.__aexit__(*exc_info)

    async def record(self, record: SessionRecord) -> None:
        text = record.to_json()  # first: a record that cannot be stored changes nothing
        tenant = _encode_tenant(record.tenant_id)
        keys = [self._session_prefix + record.session_id, self._tenant_prefix + tenant]
        args = [text, tenant, repr(float(record.last_seen)), self._ttl_ms, self._tenant_prefix, record.session_id]
        with self.connection.guard(_WHAT):
            await self._record.execute(keys, args)

    async def lookup(self, session_id: str) -> SessionRecord | None:
        with self.connection.guard(_WHAT):
            found = await self.connection.client.hmget(self._session_prefix + session_id, ["record", "last_seen"])
        text, last_seen = found
        if text is None or last_seen is None:
            return None
        return replace(SessionRecord.from_json(text), last_seen=float(last_seen))

    async def touch(self, session_id: str, now: float) -> bool:
        with self.connection.guard(_WHAT):
            touched = await self._touch.execute([self._session_prefix + session_id], [repr(float(now)), self._ttl_ms])
        return touched == 1

    async def forget(self, session_id: str) -> bool:
        with self.connection.guard(_WHAT):
            forgotten = await self._forget.execute(
                [self._session_prefix + session_id], [self._tenant_prefix, session_id]
            )
        return forgotten == 1

    async def sessions_of(self, tenant_id: str | None) -> frozenset[str]:
        with self.connection.guard(_WHAT):
            alive = await self._sessions_of.execute(
                [self._tenant_prefix + _encode_tenant(tenant_id)], [self._session_prefix]
            )
        return frozenset(_text(session_id) for session_id in cast("list[str | bytes]", alive))

    def __repr__(self) -> str:
        return f"RedisSessionDirectory({self._session_prefix[:-6]!r})"


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
