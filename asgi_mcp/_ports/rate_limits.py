"""Rate-limit storage: the port behind which token buckets live, and the in-memory default.

Buckets are keyed by tenant id and a limit name (`requests`, `tools/call`, `tool:<name>`, ...),
never by token, so rotating a token keeps its tenant's buckets. `take` is atomic per key: a shared
store must do the refill-and-take in one step (a Redis function or script), or two workers would
each see the last token. `now` is the caller's clock in seconds; a shared store may use its own
clock instead, as long as it is one clock for every worker.

The in-memory store also offers `take_now`, a synchronous take: the limiter calls it directly, so
a request pays no await for its limits unless the store is remote. A store may offer `take_all`
(every bucket of a request, narrowest first, stopping at the first refusal): the limiter then makes
one call per request instead of one per bucket, which for a remote store is one round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Protocol, runtime_checkable

from .._core.token_bucket import Bucket, Rate, new_bucket, take

__all__ = ["InMemoryRateLimitStore", "RateLimitStore"]

# Buckets held before full ones (indistinguishable from new ones) are swept out.
_SWEEP_AT: Final = 4096


@runtime_checkable
class RateLimitStore(Protocol):
    """Where buckets live. Implementations: `InMemoryRateLimitStore`; a Redis one for fleets."""

    async def take(self, tenant_id: str, limit_name: str, rate: Rate, now: float) -> float:
        """Take one token from the bucket of (`tenant_id`, `limit_name`), created full at first use.

        Returns 0.0 when allowed, else the seconds until a token is available (nothing taken).
        """
        ...

    async def forget(self, tenant_id: str) -> None:
        """Drop the tenant's buckets (its registration is gone)."""
        ...


class InMemoryRateLimitStore:
    """Process-local buckets. Memory stays bounded: a full bucket is dropped when buckets pile up,
    since a missing bucket starts full anyway."""

    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str], tuple[Bucket, Rate]] = {}
        self._sweep_at = _SWEEP_AT

    def take_now(self, tenant_id: str, limit_name: str, rate: Rate, now: float) -> float:
        key = (tenant_id, limit_name)
        held = self._buckets.get(key)
        if held is None:
            if len(self._buckets) >= self._sweep_at:
                self._sweep(now)
            bucket = new_bucket(rate, now)
            self._buckets[key] = (bucket, rate)
        else:
            bucket = held[0]
            if held[1] is not rate:
                self._buckets[key] = (bucket, rate)  # the tenant's limits changed: refill at the new rate
        return take(bucket, rate, now)

    async def take(self, tenant_id: str, limit_name: str, rate: Rate, now: float) -> float:
        return self.take_now(tenant_id, limit_name, rate, now)

    def take_all_now(
        self, tenant_id: str, buckets: Sequence[tuple[str, Rate]], now: float
    ) -> tuple[str, float] | None:
        """`take_all`, synchronously, in one call: the per-request path of the limiter. A bucket
        that exists and keeps its rate is refilled and taken from inline (`take`'s arithmetic)."""
        held_buckets = self._buckets
        for name, rate in buckets:
            held = held_buckets.get((tenant_id, name))
            if held is None or held[1] is not rate:
                wait = self.take_now(tenant_id, name, rate, now)
            else:
                bucket = held[0]
                if now > bucket.updated:
                    tokens = bucket.tokens + (now - bucket.updated) * rate.per_second
                    bucket.tokens = tokens if tokens < rate.burst else float(rate.burst)
                    bucket.updated = now
                if bucket.tokens >= 1.0:
                    bucket.tokens -= 1.0
                    continue
                wait = (1.0 - bucket.tokens) / rate.per_second
            if wait > 0.0:
                return name, wait
        return None

    async def take_all(
        self, tenant_id: str, buckets: Sequence[tuple[str, Rate]], now: float
    ) -> tuple[str, float] | None:
        """Take from each bucket in order, stopping at the first with no token: None when every one
        gave a token, else the refusing bucket's limit name and its wait."""
        for name, rate in buckets:
            wait = self.take_now(tenant_id, name, rate, now)
            if wait > 0.0:
                return name, wait
        return None

    async def forget(self, tenant_id: str) -> None:
        for key in [key for key in self._buckets if key[0] == tenant_id]:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)

    def _sweep(self, now: float) -> None:
        for key, (bucket, rate) in list(self._buckets.items()):
            if bucket.tokens + (now - bucket.updated) * rate.per_second >= rate.burst:
                del self._buckets[key]
        self._sweep_at = max(_SWEEP_AT, 2 * len(self._buckets))
