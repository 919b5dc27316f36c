"""`RateLimitStore` on Redis: token buckets every worker of a fleet takes from, one script per request.

`<prefix>:rl:<tenant id>` is one hash per tenant: a field per limit name (`requests`, `tools/call`,
`tool:<name>`, ...) holding "tokens updated". The hash expires when its emptiest bucket would be full
again (a missing bucket starts full, so nothing is lost), and `forget` is one DEL, with no SCAN.
`take_all` takes every bucket a request needs in one script, narrowest first, stopping at the first
refusal: the same order and outcome as the in-memory store, in one round trip.

The script uses the caller's `now`, not Redis's TIME: the limiter's clock is `time.time`, which hosts
keep in step (NTP: milliseconds apart, against limits counted in seconds), and a bucket's `updated`
never moves back, so a worker whose clock lags only delays a refill by its lag and never adds a token.
It also keeps the store's arithmetic that of `_core.token_bucket`, checked by the same contract suite.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, cast

import coredis

from ..._core.token_bucket import Rate
from .connection import DEFAULT_TIMEOUT, RedisConnection, require_prefix

__all__ = ["RedisRateLimitStore"]

_WHAT: Final = "rate-limit store"

# KEYS: the tenant's hash; ARGV: now, then (limit name, burst, per second) per bucket, narrowest first.
# Returns {0, "0"} when every bucket gave a token, else {bucket's 1-based index, wait in seconds}
# (a string: Redis would truncate a Lua number to an integer).
_TAKE: Final = """
local now = tonumber(ARGV[1])
local expire_ms = 0
local refused, wait = 0, '0'
for i = 0, (#ARGV - 1) / 3 - 1 do
  local name, burst, rate = ARGV[2 + 3 * i], tonumber(ARGV[3 + 3 * i]), tonumber(ARGV[4 + 3 * i])
  local tokens, updated = burst, now
  local held = redis.call('HGET', KEYS[1], name)
  if held then
    local gap = string.find(held, ' ', 1, true)
    tokens, updated = tonumber(string.sub(held, 1, gap - 1)), tonumber(string.sub(held, gap + 1))
    if now > updated then
      tokens = math.min(burst, tokens + (now - updated) * rate)
      updated = now
    end
  end
  if tokens < 1 then
    refused, wait = i + 1, string.format('%.17g', (1 - tokens) / rate)
    break
  end
  tokens = tokens - 1
  redis.call('HSET', KEYS[1], name, string.format('%.17g %.17g', tokens, updated))
  local full_ms = math.ceil(((burst - tokens) / rate + math.max(0, updated - now)) * 1000)
  if full_ms > expire_ms then expire_ms = full_ms end
end
if expire_ms > 0 and redis.call('PEXPIRE', KEYS[1], expire_ms, 'GT') == 0 and redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], expire_ms)
end
return {refused, wait}
"""


class RedisRateLimitStore:
    """A `RateLimitStore` shared by every worker on the Redis (needs `asgi-mcp[redis]`).

    Args:
        redis: a URL or a `coredis.Redis` with `decode_responses=True`.
        prefix: the first part of every key.
        timeout: seconds a take may wait for Redis before the request gets 503 with `Retry-After`.
    """

    def __init__(
        self, redis: str | coredis.Redis[str], *, prefix: str = "asgi_mcp", timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        require_prefix("RedisRateLimitStore", prefix)
        self.connection = RedisConnection(redis, timeout=timeout)
        self._prefix = f"{prefix}:rl:"
        self._take = self.connection.client.register_script(_TAKE)

    async def __aenter__(self) -> RedisRateLimitStore:
        await self.connection.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.connection.__aexit__(*exc_info)

    def key(self, tenant_id: str) -> str:
        """The hash holding the tenant's buckets."""
        return self._prefix + tenant_id

    async def take(self, tenant_id: str, limit_name: str, rate: Rate, now: float) -> float:
        refused = await self.take_all(tenant_id, ((limit_name, rate),), now)
        return 0.0 if refused is None else refused[1]

    async def take_all(
        self, tenant_id: str, buckets: Sequence[tuple[str, Rate]], now: float
    ) -> tuple[str, float] | None:
        """Take from each bucket in order, stopping at the first that has no token: None when all
        gave one, else that bucket's limit name and the seconds until it has one. One round trip."""
        args = [repr(float(now))]
        for name, rate in buckets:
            args += [name, str(rate.burst), repr(rate.per_second)]
        with self.connection.guard(_WHAT):
            answer = await self._take.execute([self.key(tenant_id)], args)
        index, wait = cast("list[Any]", answer)
        if int(index) == 0:
            return None
        return buckets[int(index) - 1][0], float(wait)

    async def forget(self, tenant_id: str) -> None:
        with self.connection.guard(_WHAT):
            await self.connection.client.delete([self.key(tenant_id)])

    def __repr__(self) -> str:
        return f"RedisRateLimitStore({self._prefix[:-4]!r})"
