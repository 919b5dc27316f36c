"""Rate limits per tenant: which buckets a request takes from, and the 429 when one is empty.

Every JSON-RPC request of a tenant takes from its `requests` bucket; `tools/call` also from its
`tool_calls` bucket and, when the tool has a limit of its own, from `tool:<name>`;
`completion/complete` from `completions`. The narrowest bucket is asked first, so a refusal spends
nothing of the broader ones (a refusal by a broader one may have spent a narrower token). Buckets
are keyed by tenant id (a token's rotation keeps them). A tenant's limits come from, first to last:
`RateLimits.tenants[tenant_id]`, the plan it was registered with (`Tenants.add(..., plan=...)`) in
`RateLimits.plans`, `RateLimits.default`.

With the in-memory store the check is one synchronous call (`take_all_now`); a remote store is
awaited, once per request when it offers `take_all` (the Redis store does: one script). A tenant
with no limit on the request's method makes no call at all.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from .._core.errors import TooManyRequests
from .._core.token_bucket import Rate, retry_after_header
from .._ports.rate_limits import InMemoryRateLimitStore, RateLimitStore

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
        tools: per tool name, on top of `tool_calls`.
    """

    requests: Rate | None = None
    tool_calls: Rate | None = None
    completions: Rate | None = None
    tools: Mapping[str, Rate] = field(default_factory=lambda: dict[str, Rate]())
    # The buckets of a request, by (method, limited tool): built once, not per request. Bounded: the
    # key's method is one of three kinds and its tool one of `tools` (others key as None).
    _routes: dict[tuple[str, str | None], tuple[tuple[str, Rate], ...]] = field(
        default_factory=lambda: dict[tuple[str, str | None], tuple[tuple[str, Rate], ...]](),
        init=False,
        repr=False,
        compare=False,
    )

    @property
    def empty(self) -> bool:
        return self.requests is None and self.tool_calls is None and self.completions is None and not self.tools

    def buckets_for(self, method: str, tool: str | None) -> tuple[tuple[str, Rate], ...]:
        """The (limit name, rate) a request of `method` (and limited `tool`) takes from, narrowest first."""
        key = (method, tool)
        names = self._routes.get(key)
        if names is None:
            names = self._routes[key] = tuple(_buckets(self, method, tool))
        return names


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
        # A store with a synchronous take (the in-memory one) is asked without an await.
        take_now: Callable[[str, str, Rate, float], float] | None = getattr(store, "take_now", None)
        self._take_now = take_now if callable(take_now) else None
        take_all: _TakeAll | None = getattr(store, "take_all", None)
        self._take_all = take_all if callable(take_all) else None
        # The in-memory store takes all of a request's buckets in one synchronous call.
        take_all_now: _TakeAllNow | None = getattr(store, "take_all_now", None)
        self._take_all_now = take_all_now if callable(take_all_now) else None

    def with_store(self, store: RateLimitStore) -> RateLimits:
        """These limits (the same default, plans and overrides, as live objects) on another store."""
        limits = copy.copy(self)
        limits._use(store)
        return limits

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
        # The route key (see `TenantLimits._routes`), computed inline: this runs on every request.
        tool = None
        if method == "tools/call":
            if limits.tools and params is not None:
                name = params.get("name")
                if isinstance(name, str) and name in limits.tools:
                    tool = name
        elif method != "completion/complete":
            method = ""  # any other method: the requests bucket alone
        routes = limits._routes  # pyright: ignore[reportPrivateUsage]
        names = routes.get((method, tool)) or limits.buckets_for(method, tool)
        if not names:
            return None
        now = self._clock()
        take_all_now = self._take_all_now
        if take_all_now is not None:
            refused = take_all_now(subject, names, now)
            if refused is not None:
                raise TooManyRequests(retry_after_header(refused[1]), limit=refused[0], request_id=request_id)
            return None
        if self._take_now is None:
            return self._check_remote(subject, names, now, request_id)
        for name, rate in names:
            wait = self._take_now(subject, name, rate, now)
            if wait > 0.0:
                raise TooManyRequests(retry_after_header(wait), limit=name, request_id=request_id)
        return None

    async def _check_remote(self, subject: str, names: Sequence[tuple[str, Rate]], now: float, request_id: Any) -> None:
        if self._take_all is not None:
            refused = await self._take_all(subject, names, now)
            if refused is not None:
                raise TooManyRequests(retry_after_header(refused[1]), limit=refused[0], request_id=request_id)
            return
        for name, rate in names:
            wait = await self.store.take(subject, name, rate, now)
            if wait > 0.0:
                raise TooManyRequests(retry_after_header(wait), limit=name, request_id=request_id)


class _TakeAll(Protocol):
    def __call__(
        self, tenant_id: str, buckets: Sequence[tuple[str, Rate]], now: float, /
    ) -> Awaitable[tuple[str, float] | None]: ...


class _TakeAllNow(Protocol):
    def __call__(
        self, tenant_id: str, buckets: Sequence[tuple[str, Rate]], now: float, /
    ) -> tuple[str, float] | None: ...


def _buckets(limits: TenantLimits, method: str, tool: str | None) -> list[tuple[str, Rate]]:
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
    return names
