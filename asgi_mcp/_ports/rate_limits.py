"""Rate-limit storage: the port behind which token buckets live, and the in-memory default.

Buckets are keyed by tenant id and a limit name (`requests`, `tools/call`, `tool:<name>`, ...),
never by token, so rotating a token keeps its tenant's buckets. `take` is atomic per key: a shared
store must do the refill-and-take in one step (a Redis function or script), or two workers would
each see the last token. `now` is the caller's clock in seconds; a shared store may use its own
clock instead, as long as it is one clock for every worker.

The in-memory store also offers `take_now`, a synchronous take, and `take_all_now`, every bucket of
a request in one synchronous call: the limiter calls that directly, so a request pays no await for
its limits unless the store is remote. A store may offer `take_all`
(every bucket of a request, narrowest first, stopping at the first refusal): the limiter then makes
one call per request instead of one per bucket, which for a remote store is one round trip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
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

    _NONE_HELD: Final[Mapping[str, tuple[Bucket, Rate]]] = MappingProxyType({})

    def __init__(self) -> None:
        # By tenant, then limit name: a request finds its tenant once and allocates no key per bucket.
        self._buckets: dict[str, dict[str, tuple[Bucket, Rate]]] = {}
        self._count = 0
        self._sweep_at = _SWEEP_AT

    def take_now(self, tenant_id: str, limit_name: str, rate: Rate, now: float) -> float:
        held_buckets = self._buckets.get(tenant_id)
        held = held_buckets.get(limit_name) if held_buckets is not None else None
        if held is None:
            return take(self._new(tenant_id, limit_name, rate, now), rate, now)
        bucket = held[0]
        if held[1] is not rate:  # the tenant's limits changed: refill at the new rate
            self._buckets[tenant_id][limit_name] = (bucket, rate)
        return take(bucket, rate, now)

    async def take(self, tenant_id: str, limit_name: str, rate: Rate, now: float) -> float:
        return self.take_now(tenant_id, limit_name, rate, now)

    def take_all_now(self, tenant_id: str, buckets: Sequence[tuple[str, Rate]], now: float) -> tuple[str, float] | None:
        """`take_all`, synchronously, in one call: the per-request path of the limiter. A bucket
        that exists and keeps its rate is refilled and taken from inline (`take`'s arithmetic)."""
        held_buckets = self._buckets.get(tenant_id) or self._NONE_HELD
        for name, rate in buckets:
            held = held_buckets.get(name)
            if held is None or held[1] is not rate:
                wait = self.take_now(tenant_id, name, rate, now)
                held_buckets = self._buckets[tenant_id]
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
        return self.take_all_now(tenant_id, buckets, now)

    async def forget(self, tenant_id: str) -> None:
        dropped = self._buckets.pop(tenant_id, None)
        if dropped is not None:
            self._count -= len(dropped)

    def __len__(self) -> int:
        return self._count

    def _new(self, tenant_id: str, limit_name: str, rate: Rate, now: float) -> Bucket:
        if self._count >= self._sweep_at:
            self._sweep(now)
        bucket = new_bucket(rate, now)
        self._buckets.setdefault(tenant_id, {})[limit_name] = (bucket, rate)
        self._count += 1
        return bucket

    def _sweep(self, now: float) -> None:
        for tenant_id, held_buckets in list(self._buckets.items()):
            for name, (bucket, rate) in list(held_buckets.items()):
                if bucket.tokens + (now - bucket.updated) * rate.per_second >= rate.burst:
                    del held_buckets[name]
            if not held_buckets:
                del self._buckets[tenant_id]
        self._count = sum(len(held_buckets) for held_buckets in self._buckets.values())
        self._sweep_at = max(_SWEEP_AT, 2 * self._count)
