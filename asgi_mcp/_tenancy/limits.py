"""Rate limits per tenant: which buckets a request takes from, and the 429 when one is empty.

Every JSON-RPC request of a tenant takes from its `requests` bucket; `tools/call` also from its
`tool_calls` bucket and, when the tool has a limit of its own, from `tool:<name>`;
`completion/complete` from `completions`. The narrowest bucket is asked first, so a refusal spends
nothing of the broader ones (a refusal by a broader one may have spent a narrower token). Buckets
are keyed by tenant id (a token's rotation keeps them). A tenant's limits come from, first to last:
`RateLimits.tenants[tenant_id]`, the plan it was registered with (`Tenants.add(..., plan=...)`) in
`RateLimits.plans`, `RateLimits.default`.

Per request the app calls `Limiter.limit` (one per app, `RateLimits.limiter`). Which buckets a
request takes from is worked out once per limits, method and limited tool (a `LimitRoute`). With the
in-memory store the take is one synchronous call (`take_route_now`, which finds the tenant's buckets
for a route once); a remote store is awaited, once per request when it offers `take_all` (the Redis
store does: one script). A tenant with no limit on the request's method makes no call at all.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

from .._auth.principal import Principal
from .._core.errors import TooManyRequests
from .._core.jsonrpc import Message
from .._core.token_bucket import Rate, retry_after_header
from .._ports.rate_limits import HeldBucket, InMemoryRateLimitStore, RateLimitStore, take_in_order

if TYPE_CHECKING:
    from .tenants import Tenants

__all__ = ["RateLimits", "TenantLimits"]

logger = logging.getLogger("asgi_mcp.limits")

REQUESTS: Final = "requests"
ANONYMOUS: Final = "-"  # the one subject of an app without authentication


@dataclass(frozen=True)
class TenantLimits:
    """The limits of one tenant (or plan). None: unlimited.

    Args:
        requests: every JSON-RPC request (notifications and responses are never limited).
        tool_calls: `tools/call`.
        completions: `completion/complete` (the spec asks servers to limit them).
        tools: per tool name, on top of `tool_calls` (read when the limits are made).
    """

    requests: Rate | None = None
    tool_calls: Rate | None = None
    completions: Rate | None = None
    tools: Mapping[str, Rate] = field(default_factory=lambda: dict[str, Rate]())
    # What each kind of request takes from, worked out once, not per request.
    _routes: Routes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_routes", Routes(self))

    @property
    def empty(self) -> bool:
        return self.requests is None and self.tool_calls is None and self.completions is None and not self.tools

    def route_for(self, method: str | None, params: Mapping[str, Any] | None) -> LimitRoute | None:
        """The buckets a request takes from (None: no limit applies to it)."""
        return self._routes.route_for(method, params)


class LimitRoute:
    """The buckets one kind of request takes from under one `TenantLimits`, as (limit name, rate),
    narrowest first. Hashed by identity: the in-memory store finds a tenant's buckets by it."""

    __slots__ = ("buckets",)

    def __init__(self, buckets: tuple[tuple[str, Rate], ...]) -> None:
        self.buckets = buckets


class Routes:
    """A `TenantLimits`' routes by method (and limited tool); None where no limit applies."""

    __slots__ = ("completion", "other", "tool_call", "tools")

    def __init__(self, limits: TenantLimits) -> None:
        self.tool_call = _route(limits, "tools/call", None)
        self.tools = {tool: LimitRoute(_buckets(limits, "tools/call", tool)) for tool in limits.tools}
        self.completion = _route(limits, "completion/complete", None)
        self.other = _route(limits, "", None)

    def route_for(self, method: str | None, params: Mapping[str, Any] | None) -> LimitRoute | None:
        if method == "tools/call":
            route = self.tool_call
            if self.tools and params is not None:
                name = params.get("name")
                if isinstance(name, str):
                    route = self.tools.get(name, route)
            return route
        if method == "completion/complete":
            return self.completion
        return self.other


class RateLimits:
    """App-wide rate-limit configuration: defaults, plans, per-tenant overrides, and the store.

    Args:
        default: limits of a tenant with no override and no known plan (None: unlimited).
        plans: limits by plan name, for tenants registered with `plan=`.
        tenants: limits by tenant id, overriding plan and default.
        store: where buckets live (default: `InMemoryRateLimitStore`, process-local).
        clock: seconds, passed to the store (default `time.time`: one clock a fleet can share).
    """

    def __init__(
        self,
        default: TenantLimits | None = None,
        *,
        plans: Mapping[str, TenantLimits] | None = None,
        tenants: Mapping[str, TenantLimits] | None = None,
        store: RateLimitStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.default = default or TenantLimits()
        self.plans = dict(plans or {})
        self.tenants = dict(tenants or {})
        # Whether the store was chosen here: a fleet's shared store replaces only the default one.
        self.store_given = store is not None
        self._clock = clock
        self._unknown_plans: set[str] = set()
        self._use(store if store is not None else InMemoryRateLimitStore())

    def _use(self, store: RateLimitStore) -> None:
        self.store: RateLimitStore = store
        # The in-memory store is asked without an await, and the limiter takes from its buckets itself.
        self._memory = store if isinstance(store, InMemoryRateLimitStore) else None
        # So is any store with a synchronous take (all of a request's buckets in one call, or one).
        take_all_now: _TakeAllNow | None = getattr(store, "take_all_now", None)
        self._take_all_now = take_all_now if callable(take_all_now) else None
        take_now: Callable[[str, str, Rate, float], float] | None = getattr(store, "take_now", None)
        self._take_now = take_now if callable(take_now) else None
        take_all: _TakeAll | None = getattr(store, "take_all", None)
        self._take_all = take_all if callable(take_all) else None

    def with_store(self, store: RateLimitStore) -> RateLimits:
        """These limits (the same default, plans and overrides, as live objects) on another store."""
        limits = copy.copy(self)
        limits._use(store)
        return limits

    def limiter(self, tenants: Tenants | None) -> Limiter:
        """What an app with these limits and `tenants` calls per request."""
        return Limiter(self, tenants, self._clock, self._memory)

    def limits_for(self, tenant_id: str | None, plan: str | None) -> TenantLimits:
        if tenant_id is not None:
            override = self.tenants.get(tenant_id)
            if override is not None:
                return override
        if plan is not None:
            limits = self.plans.get(plan)
            if limits is not None:
                return limits
            if plan not in self._unknown_plans:
                self._unknown_plans.add(plan)
                logger.warning("plan %r has no rate limits configured; the defaults apply", plan)
        return self.default

    def check(
        self, subject: str, limits: TenantLimits, method: str, params: Mapping[str, Any] | None, request_id: Any
    ) -> Awaitable[None] | None:
        """Take the request's tokens. Raises `TooManyRequests` (sync store), or returns an awaitable
        that does (remote store); None when allowed without awaiting."""
        route = limits.route_for(method, params)
        if route is None:
            return None
        return self.take(subject, route, self._clock(), request_id)

    def take(self, subject: str, route: LimitRoute, now: float, request_id: Any) -> Awaitable[None] | None:
        """`check` once the route is known."""
        if self._memory is not None:
            refused = self._memory.take_route_now(subject, route, now)
        elif self._take_all_now is not None:
            refused = self._take_all_now(subject, route.buckets, now)
        elif self._take_now is not None:
            refused = None
            for name, rate in route.buckets:
                wait = self._take_now(subject, name, rate, now)
                if wait > 0.0:
                    refused = name, wait
                    break
        else:
            return self._take_remote(subject, route.buckets, now, request_id)
        if refused is not None:
            raise TooManyRequests(retry_after_header(refused[1]), limit=refused[0], request_id=request_id)
        return None

    async def _take_remote(self, subject: str, names: Sequence[tuple[str, Rate]], now: float, request_id: Any) -> None:
        if self._take_all is not None:
            refused = await self._take_all(subject, names, now)
            if refused is not None:
                raise TooManyRequests(retry_after_header(refused[1]), limit=refused[0], request_id=request_id)
            return
        for name, rate in names:
            wait = await self.store.take(subject, name, rate, now)
            if wait > 0.0:
                raise TooManyRequests(retry_after_header(wait), limit=name, request_id=request_id)


class Limiter:
    """One app's rate limiting, per request (`RateLimits.limiter`): `limit` is what the request
    path calls. The limits' `default`, `plans` and `tenants` are read live; the tenants' plans
    select limits."""

    __slots__ = ("_clock", "_rate_limits", "_route_buckets", "_routes", "_tenants")

    def __init__(
        self,
        rate_limits: RateLimits,
        tenants: Tenants | None,
        clock: Callable[[], float],
        memory: InMemoryRateLimitStore | None,
    ) -> None:
        self._rate_limits = rate_limits
        self._tenants = tenants
        self._clock = clock
        # With the in-memory store: the buckets of each tenant's routes, and how to find them.
        self._routes = memory.routes if memory is not None else None
        self._route_buckets = memory.route_buckets if memory is not None else _no_buckets

    def limit(self, principal: Principal, message: Message) -> Awaitable[None] | None:
        """Take the request's tokens: raises `TooManyRequests`, or returns an awaitable that does
        (a remote store); None when allowed without awaiting."""
        if message.kind != "request":
            return None
        tenant_id = principal.tenant_id
        if tenant_id is None:  # no override, no plan: the defaults
            subject, limits = principal.owner or ANONYMOUS, self._rate_limits.default
        else:
            plan = None
            if self._tenants is not None:
                tenant = self._tenants.by_id(tenant_id)
                plan = tenant.plan if tenant is not None else None
            subject, limits = tenant_id, self._rate_limits.limits_for(tenant_id, plan)
        route = limits.route_for(message.method, message.params)
        if route is None:
            return None
        now = self._clock()
        resolved = self._routes
        if resolved is None:  # another store than the in-memory one
            return self._rate_limits.take(subject, route, now, message.id)
        try:
            held = resolved[subject][route]
        except KeyError:  # the first request of its kind (since its buckets last changed)
            held = self._route_buckets(subject, route, now)
        refused = take_in_order(held, now)
        if refused is not None:
            raise TooManyRequests(retry_after_header(refused[1]), limit=refused[0], request_id=message.id)
        return None


class _TakeAll(Protocol):
    def __call__(
        self, tenant_id: str, buckets: Sequence[tuple[str, Rate]], now: float, /
    ) -> Awaitable[tuple[str, float] | None]: ...


class _TakeAllNow(Protocol):
    def __call__(
        self, tenant_id: str, buckets: Sequence[tuple[str, Rate]], now: float, /
    ) -> tuple[str, float] | None: ...


def _no_buckets(tenant_id: str, route: LimitRoute, now: float) -> tuple[HeldBucket, ...]:
    raise AssertionError("only the in-memory store has routes")


def _route(limits: TenantLimits, method: str, tool: str | None) -> LimitRoute | None:
    buckets = _buckets(limits, method, tool)
    return LimitRoute(buckets) if buckets else None


def _buckets(limits: TenantLimits, method: str, tool: str | None) -> tuple[tuple[str, Rate], ...]:
    # Narrowest first: a request refused by its tool's limit has spent nothing of the broader ones.
    names: list[tuple[str, Rate]] = []
    if method == "tools/call":
        if tool is not None:
            names.append((f"tool:{tool}", limits.tools[tool]))
        if limits.tool_calls is not None:
            names.append((method, limits.tool_calls))
    elif method == "completion/complete" and limits.completions is not None:
        names.append((method, limits.completions))
    if limits.requests is not None:
        names.append((REQUESTS, limits.requests))
    return tuple(names)
