"""`SessionSlots` on Redis: each capped tenant's live sessions as a sorted set scored by when they lapse.

`<prefix>:slots:<tenant id>` holds session ids, each scored by the wall-clock second its slot lapses.
`reserve` is one script: drop lapsed members, check the count against the cap, add. The key itself
expires with its last slot, so a tenant that stops opening sessions leaves nothing behind. Scores
come from the callers' clocks (`time.time`): hosts agree within milliseconds, slots last minutes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import coredis

from ..._core.errors import ConfigurationError
from .connection import DEFAULT_TIMEOUT, RedisConnection, require_prefix

__all__ = ["RedisSessionSlots"]

_WHAT: Final = "session slots"

# Keep the key as long as its latest slot: GT never shortens it; a key without a TTL gets one.
_EXPIRE: Final = """
if redis.call('PEXPIRE', KEYS[1], ARGV[2], 'GT') == 0 and redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
"""
# KEYS: the tenant's set; ARGV: lapse (now + ttl), ttl ms, now, cap, session id.
_RESERVE: Final = f"""
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if not redis.call('ZSCORE', KEYS[1], ARGV[5]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[5])
{_EXPIRE}
return 1
"""
# KEYS: the tenant's set; ARGV: lapse, ttl ms, session ids. XX: a slot released meanwhile stays free.
_RENEW: Final = f"""
for i = 3, #ARGV do redis.call('ZADD', KEYS[1], 'XX', 'GT', ARGV[1], ARGV[i]) end
if redis.call('EXISTS', KEYS[1]) == 1 then
{_EXPIRE}
end
return 1
"""


class RedisSessionSlots:
    """`SessionSlots` every worker on the Redis shares (needs `asgi-mcp[redis]`).

    Args:
        redis: a URL or a `coredis.Redis` with `decode_responses=True`.
        prefix: the first part of every key.
        ttl: seconds a slot lives after it was reserved or renewed: the session directory's ttl.
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
            raise ConfigurationError("RedisSessionSlots ttl must be positive")
        require_prefix("RedisSessionSlots", prefix)
        self.connection = RedisConnection(redis, timeout=timeout)
        self.ttl = ttl
        self._prefix = f"{prefix}:slots:"
        self._ttl_ms = str(max(1, round(ttl * 1000)))
        client = self.connection.client
        self._reserve = client.register_script(_RESERVE)
        self._renew = client.register_script(_RENEW)

    async def __aenter__(self) -> RedisSessionSlots:
        await self.connection.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.connection.__aexit__(*exc_info)

    def key(self, tenant_id: str) -> str:
        return self._prefix + tenant_id

    async def reserve(self, tenant_id: str, session_id: str, cap: int, now: float) -> bool:
        args = [repr(now + self.ttl), self._ttl_ms, repr(float(now)), str(cap), session_id]
        with self.connection.guard(_WHAT):
            reserved = await self._reserve.execute([self.key(tenant_id)], args)
        return reserved == 1

    async def renew(self, tenant_id: str, session_ids: Sequence[str], now: float) -> None:
        if not session_ids:
            return
        with self.connection.guard(_WHAT):
            await self._renew.execute([self.key(tenant_id)], [repr(now + self.ttl), self._ttl_ms, *session_ids])

    async def release(self, tenant_id: str, session_id: str) -> None:
        with self.connection.guard(_WHAT):
            await self.connection.client.zrem(self.key(tenant_id), [session_id])

    async def count(self, tenant_id: str, now: float) -> int:
        with self.connection.guard(_WHAT):
            return await self.connection.client.zcount(self.key(tenant_id), f"({float(now)!r}", "+inf")

    def __repr__(self) -> str:
        return f"RedisSessionSlots({self._prefix[:-7]!r})"
