"""Rate-limit storage: the port behind which token buckets live, and the in-memory default.

Buckets are keyed by tenant id and a limit name (`requests`, `tools/call`, `tool:<name>`, ...),
never by token, so rotating a token keeps its tenant's buckets. `take` is atomic per key: a shared
store must do the refill-and-take in one step (a Redis function or script), or two workers would
each see the last token. `now` is the caller's clock in seconds; a shared store may use its own
clock instead, as long as it is one clock for every worker.

A store may offer `take_all` (every bucket of a request, narrowest first, stopping at the first
refusal): the limiter then makes one call per request instead of one per bucket, which for a remote
store is one round trip. The in-memory store also takes synchronously, so a request pays no await
for its limits: `take_now` (one bucket), `take_all_now` (a request's buckets) and `take_route_now`.
A route (a tenant's limits for one method and tool, `_tenancy.limits`) names a request's buckets:
the store finds a tenant's buckets of a route once (`route_buckets`, then `routes`), and the
limiter takes from those same objects on every request of that kind, with no call into the store.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Final, Protocol, runtime_checkable

from .._core.token_bucket import Rate

__all__ = ["InMemoryRateLimitStore", "RateLimitStore"]

# Buckets held before full ones (indistinguishable from new ones) are swept out.
_SWEEP_AT: Final = 4096
# Routes resolved per tenant before its resolutions are dropped (a tenant's routes are a handful,
# more only if its limits keep being replaced).
_ROUTES_PER_TENANT: Final = 32


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


class BucketRoute(Hashable, Protocol):
    """The buckets a request takes from, narrowest first, as (limit name, rate); hashed by identity."""

    @property
    def buckets(self) -> tuple[tuple[str, Rate], ...]: ...


class HeldBucket:
    """A bucket in memory: `_core.token_bucket`'s state (`tokens` left at `updated`, same arithmetic)
    and, kept with it, `full_at`, when it is full again: taking from a full bucket, the usual state
    of a generous limit, is then one comparison and three stores. The rate's figures are at hand as
    floats (no int meets a float in the arithmetic), and the limit name for a refusal."""

    __slots__ = ("after_full", "burst", "full_at", "interval", "limit_name", "per_second", "rate", "tokens", "updated")

    def __init__(self, limit_name: str, rate: Rate, now: float) -> None:
        self.limit_name = limit_name
        self.tokens, self.updated = float(rate.burst), now
        self.use_rate(rate)

    def use_rate(self, rate: Rate) -> None:
        """Refill at `rate` from now on (the tenant's limits changed); a fuller bucket than its new
        burst is full."""
        self.rate, self.burst, self.per_second = rate, float(rate.burst), rate.per_second
        self.after_full = self.burst - 1.0  # what a take from a full bucket leaves
        self.interval = 1.0 / rate.per_second  # one token's refill
        self.tokens = min(self.tokens, self.burst)
        self.full_at = self.updated + (self.burst - self.tokens) / self.per_second

    def take(self, now: float) -> float:
        """`_core.token_bucket.take`: 0.0 when a token was taken, else the seconds to wait (nothing
        taken)."""
        if now >= self.full_at:
            self.tokens, self.updated, self.full_at = self.after_full, now, now + self.interval
            return 0.0
        tokens = self.tokens
        if now > self.updated:
            tokens += (now - self.updated) * self.per_second
            if tokens > self.burst:  # `full_at` rounded the other way
                tokens = self.burst
            self.updated = now
        if tokens >= 1.0:
            self.tokens = tokens = tokens - 1.0
            self.full_at = self.updated + (self.burst - tokens) / self.per_second
            return 0.0
        self.tokens = tokens
        return (1.0 - tokens) / self.per_second


class InMemoryRateLimitStore:
    """Process-local buckets. Memory stays bounded: a full bucket is dropped when buckets pile up,
    since a missing bucket starts full anyway."""

    def __init__(self) -> None:
        # By tenant, then limit name.
        self._buckets: dict[str, dict[str, HeldBucket]] = {}
        # By tenant, then route: the route's buckets, resolved. An entry holds live buckets only:
        # a tenant's entries go when one of its buckets is dropped or changes rate.
        self._routes: dict[str, dict[BucketRoute, tuple[HeldBucket, ...]]] = {}
        # Read-only: the limiter looks a request's buckets up here and takes from them itself.
        self.routes: Mapping[str, Mapping[BucketRoute, tuple[HeldBucket, ...]]] = self._routes
        self._count = 0
        self._sweep_at = _SWEEP_AT
        self._sweeps = 0

    def take_now(self, tenant_id: str, limit_name: str, rate: Rate, now: float) -> float:
        return self._held(tenant_id, limit_name, rate, now).take(now)

    async def take(self, tenant_id: str, limit_name: str, rate: Rate, now: float) -> float:
        return self.take_now(tenant_id, limit_name, rate, now)

    def take_route_now(self, tenant_id: str, route: BucketRoute, now: float) -> tuple[str, float] | None:
        """`take_all_now` of the route's buckets (`route_buckets`)."""
        return take_in_order(self.route_buckets(tenant_id, route, now), now)

    def route_buckets(self, tenant_id: str, route: BucketRoute, now: float) -> tuple[HeldBucket, ...]:
        """The tenant's buckets of `route`, in its order (made full where missing): found once, then
        kept in `routes` until one of them is dropped or changes rate."""
        routes = self._routes.get(tenant_id)
        held = routes.get(route) if routes is not None else None
        if held is None:
            held = self._held_all(tenant_id, route.buckets, now)
            routes = self._routes.setdefault(tenant_id, {})
            if len(routes) >= _ROUTES_PER_TENANT:
                routes.clear()
            routes[route] = held
        return held

    def take_all_now(self, tenant_id: str, buckets: Sequence[tuple[str, Rate]], now: float) -> tuple[str, float] | None:
        """`take_all`, synchronously."""
        return take_in_order(self._held_all(tenant_id, buckets, now), now)

    async def take_all(
        self, tenant_id: str, buckets: Sequence[tuple[str, Rate]], now: float
    ) -> tuple[str, float] | None:
        """Take from each bucket in order, stopping at the first with no token: None when every one
        gave a token, else the refusing bucket's limit name and its wait."""
        return self.take_all_now(tenant_id, buckets, now)

    async def forget(self, tenant_id: str) -> None:
        dropped = self._buckets.pop(tenant_id, None)
        self._routes.pop(tenant_id, None)
        if dropped is not None:
            self._count -= len(dropped)

    def __len__(self) -> int:
        return self._count

    def _held(self, tenant_id: str, limit_name: str, rate: Rate, now: float) -> HeldBucket:
        held_buckets = self._buckets.get(tenant_id)
        held = held_buckets.get(limit_name) if held_buckets is not None else None
        if held is None:
            return self._new(tenant_id, limit_name, rate, now)
        if held.rate is not rate:  # the tenant's limits changed: refill at the new rate
            held.use_rate(rate)
            self._routes.pop(tenant_id, None)  # resolved at the old rate
        return held

    def _held_all(self, tenant_id: str, buckets: Sequence[tuple[str, Rate]], now: float) -> tuple[HeldBucket, ...]:
        while True:
            sweeps = self._sweeps
            held = tuple(self._held(tenant_id, name, rate, now) for name, rate in buckets)
            if self._sweeps == sweeps:  # else a sweep (making room for a new one) may have dropped one
                return held

    def _new(self, tenant_id: str, limit_name: str, rate: Rate, now: float) -> HeldBucket:
        if self._count >= self._sweep_at:
            self._sweep(now)
        bucket = HeldBucket(limit_name, rate, now)
        self._buckets.setdefault(tenant_id, {})[limit_name] = bucket
        self._count += 1
        return bucket

    def _sweep(self, now: float) -> None:
        self._sweeps += 1
        self._routes.clear()  # they may hold dropped buckets
        for tenant_id, held_buckets in list(self._buckets.items()):
            for name, bucket in list(held_buckets.items()):
                if now >= bucket.full_at:
                    del held_buckets[name]
            if not held_buckets:
                del self._buckets[tenant_id]
        self._count = sum(len(held_buckets) for held_buckets in self._buckets.values())
        self._sweep_at = max(_SWEEP_AT, 2 * self._count)


def take_in_order(held: Sequence[HeldBucket], now: float) -> tuple[str, float] | None:
    """Take one token from each bucket in order, stopping at the first with none: None when every
    one gave a token, else the refusing bucket's limit name and its wait."""
    for bucket in held:
        wait = bucket.take(now)
        if wait > 0.0:
            return bucket.limit_name, wait
    return None
