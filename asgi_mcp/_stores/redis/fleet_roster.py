"""`FleetRoster` on Redis: each worker's record a string with a TTL, the fleet a set of worker ids.

`{<prefix>}:fl:w:<worker id>` holds the record's JSON and expires when the worker stops beating;
`{<prefix>}:fl:workers` is the set of worker ids (both under one hash tag: one cluster slot). Redis's
own expiry ages a killed worker out, whatever the clocks of the workers say. Every method is one script.
"""

from __future__ import annotations

import math
from typing import Any, Final, cast

import coredis

from ..._ports.fleet_roster import WorkerRecord
from .connection import DEFAULT_TIMEOUT, RedisConnection, require_prefix

__all__ = ["RedisFleetRoster"]

_WHAT: Final = "fleet roster"

# KEYS: worker set; ARGV: record key prefix, worker id, record JSON, ttl ms.
_BEAT: Final = """
redis.call('SET', ARGV[1] .. ARGV[2], ARGV[3], 'PX', ARGV[4])
redis.call('SADD', KEYS[1], ARGV[2])
return 1
"""
# KEYS: worker set; ARGV: record key prefix, worker id.
_LEAVE: Final = """
redis.call('SREM', KEYS[1], ARGV[2])
return redis.call('DEL', ARGV[1] .. ARGV[2])
"""
# KEYS: worker set; ARGV: record key prefix. Ids whose record expired are dropped on the way.
_ALIVE: Final = """
local records = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local record = redis.call('GET', ARGV[1] .. id)
  if record then table.insert(records, record) else redis.call('SREM', KEYS[1], id) end
end
return records
"""


class RedisFleetRoster:
    """A `FleetRoster` every worker sharing the Redis reads (needs `asgi-mcp[redis]`).

    Args:
        redis: a URL or a `coredis.Redis` with `decode_responses=True`.
        prefix: the first part of every key.
        timeout: seconds a call may take before it fails as `StoreUnavailable` (503).
    """

    def __init__(
        self, redis: str | coredis.Redis[str], *, prefix: str = "asgi_mcp", timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        require_prefix("RedisFleetRoster", prefix)
        self.connection = RedisConnection(redis, timeout=timeout)
        base = f"{{{prefix}}}:fl:"
        self._workers = base + "workers"
        self._record_prefix = base + "w:"
        client = self.connection.client
        self._beat = client.register_script(_BEAT)
        self._leave = client.register_script(_LEAVE)
        self._alive = client.register_script(_ALIVE)

    async def __aenter__(self) -> RedisFleetRoster:
        await self.connection.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.connection.__aexit__(*exc_info)

    async def beat(self, record: WorkerRecord, *, ttl: float) -> None:
        if not ttl > 0 or math.isinf(ttl):
            raise ValueError("ttl must be a positive number of seconds")
        text = record.to_json()
        with self.connection.guard(_WHAT):
            await self._beat.execute(
                [self._workers], [self._record_prefix, record.worker_id, text, str(max(1, round(ttl * 1000)))]
            )

    async def leave(self, worker_id: str) -> bool:
        with self.connection.guard(_WHAT):
            removed = await self._leave.execute([self._workers], [self._record_prefix, worker_id])
        return int(cast("int", removed)) > 0

    async def alive(self) -> list[WorkerRecord]:
        with self.connection.guard(_WHAT):
            texts = cast("list[str | bytes]", await self._alive.execute([self._workers], [self._record_prefix]))
        return sorted((WorkerRecord.from_json(text) for text in texts), key=lambda record: record.worker_id)

    def __repr__(self) -> str:
        return f"RedisFleetRoster({self._workers[1 : -len('}:fl:workers')]!r})"
