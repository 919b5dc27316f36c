"""Token buckets (sans-IO), the in-memory rate-limit store against the store contract, and the
limit policy's choice of buckets and limits; the in-memory store's routes, and the per-request limiter."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgi_mcp._auth.principal import Principal
from asgi_mcp._core.errors import RATE_LIMITED, TooManyRequests
from asgi_mcp._core.jsonrpc import Message, classify
from asgi_mcp._core.token_bucket import Rate, new_bucket, retry_after_header, take
from asgi_mcp._kernel.hosting import ServerHost
from asgi_mcp._ports.rate_limits import InMemoryRateLimitStore, RateLimitStore
from asgi_mcp._tenancy.limits import LimitRoute, RateLimits, TenantLimits

from .rate_limit_contract import RateLimitStoreContract

pytestmark = pytest.mark.anyio


class TestInMemoryStore(RateLimitStoreContract):
    @pytest.fixture
    def store(self) -> InMemoryRateLimitStore:
        return InMemoryRateLimitStore()


def test_the_in_memory_store_is_a_rate_limit_store() -> None:
    assert isinstance(InMemoryRateLimitStore(), RateLimitStore)


def test_rates_refuse_nonsense() -> None:
    for burst, per_second in ((0, 1.0), (1, 0.0), (1, -1.0), (1, float("inf")), (1, float("nan"))):
        with pytest.raises(ValueError, match=r"burst|per_second"):
            Rate(burst, per_second)
    assert Rate.per_minute(10) == Rate(burst=10, per_second=10 / 60)
    assert Rate.per_hour(60, burst=5) == Rate(burst=5, per_second=60 / 3600)


@given(
    burst=st.integers(1, 50),
    per_second=st.floats(0.01, 100),
    gaps=st.lists(st.floats(0, 10), max_size=60),
)
def test_a_bucket_never_allows_more_than_burst_plus_refill(burst: int, per_second: float, gaps: list[float]) -> None:
    rate = Rate(burst, per_second)
    bucket = new_bucket(rate, 0.0)
    now, allowed = 0.0, 0
    for gap in gaps:
        now += gap
        wait = take(bucket, rate, now)
        assert wait >= 0.0
        if wait == 0.0:
            allowed += 1
        else:
            # The promised wait is exact: at that moment a token is there.
            probe = new_bucket(rate, 0.0)
            probe.tokens, probe.updated = bucket.tokens, bucket.updated
            assert take(probe, rate, now + wait + 1e-9) == 0.0
    assert allowed <= burst + now * per_second + 1e-6


def test_retry_after_is_whole_seconds_and_at_least_one() -> None:
    assert retry_after_header(0.01) == 1
    assert retry_after_header(1.0) == 1
    assert retry_after_header(1.2) == 2


def test_the_sweep_keeps_memory_bounded_and_keeps_partly_spent_buckets() -> None:
    store = InMemoryRateLimitStore()
    slow, fast = Rate(burst=1, per_second=1e-6), Rate(burst=1, per_second=1.0)
    store.take_now("spent", "requests", slow, 0.0)
    for index in range(10_000):
        store.take_now(f"t{index}", "requests", fast, 100.0 + index)  # each full again a second later
    assert len(store) < 5_000
    # Swept buckets were full (a fresh one is the same); the spent one was kept.
    assert store.take_now("spent", "requests", slow, 20_000.0) > 0.0


def test_too_many_requests_carries_status_code_header_and_retry_after() -> None:
    error = TooManyRequests(7, limit="tools/call", request_id=3)
    assert error.status == 429
    assert (b"retry-after", b"7") in error.headers
    assert error.error_body() == {
        "jsonrpc": "2.0",
        "id": 3,
        "error": {"code": RATE_LIMITED, "message": "Too many requests", "data": {"retryAfter": 7}},
    }
    assert RATE_LIMITED == -32023


def test_limits_resolve_tenant_then_plan_then_default(caplog: pytest.LogCaptureFixture) -> None:
    default, free, vip = TenantLimits(requests=Rate(1, 1)), TenantLimits(requests=Rate(2, 1)), TenantLimits()
    limits = RateLimits(default, plans={"free": free}, tenants={"vip": vip})
    assert limits.limits_for("vip", "free") is vip
    assert limits.limits_for("a", "free") is free
    assert limits.limits_for("a", None) is default
    assert limits.limits_for("a", "gold") is default
    limits.limits_for("b", "gold")
    assert [r.getMessage() for r in caplog.records].count(
        "plan 'gold' has no rate limits configured; the defaults apply"
    ) == 1


def test_a_tool_call_takes_from_requests_tool_calls_and_its_tools_bucket() -> None:
    clock = [0.0]
    limits = TenantLimits(
        requests=Rate(100, 1), tool_calls=Rate(3, 0.001), tools={"slow": Rate(1, 0.001)}, completions=Rate(1, 0.001)
    )
    limiter = RateLimits(clock=lambda: clock[0])
    params = {"name": "slow", "arguments": {}}
    assert limiter.check("t", limits, "tools/call", params, 1) is None
    with pytest.raises(TooManyRequests) as refused:
        limiter.check("t", limits, "tools/call", params, 2)
    assert refused.value.limit == "tool:slow"
    assert refused.value.request_id == 2
    limiter.check("t", limits, "tools/call", {"name": "fast"}, 3)
    limiter.check("t", limits, "tools/call", {"name": "fast"}, 4)
    with pytest.raises(TooManyRequests) as refused:
        limiter.check("t", limits, "tools/call", {"name": "fast"}, 5)
    assert refused.value.limit == "tools/call"
    limiter.check("t", limits, "completion/complete", {}, 6)
    with pytest.raises(TooManyRequests):
        limiter.check("t", limits, "completion/complete", {}, 7)
    # Other methods only take from `requests`; a tenant with no limits takes nothing.
    limiter.check("t", limits, "tools/list", None, 8)
    assert limiter.check("t", TenantLimits(), "tools/call", params, 9) is None


class _RemoteStore:
    """A store with no synchronous path (as a Redis one): the limiter must await it."""

    def __init__(self) -> None:
        self.inner = InMemoryRateLimitStore()
        self.calls = 0

    async def take(self, tenant_id: str, limit_name: str, rate: Rate, now: float) -> float:
        self.calls += 1
        return await self.inner.take(tenant_id, limit_name, rate, now)

    async def forget(self, tenant_id: str) -> None:
        await self.inner.forget(tenant_id)


async def test_a_remote_store_is_awaited() -> None:
    store = _RemoteStore()
    limiter = RateLimits(store=store)
    limits = TenantLimits(tool_calls=Rate(1, 0.001))
    pending = limiter.check("t", limits, "tools/call", {"name": "x"}, 1)
    assert pending is not None
    await pending
    second = limiter.check("t", limits, "tools/call", {"name": "x"}, 2)
    assert second is not None
    with pytest.raises(TooManyRequests):
        await second
    assert store.calls == 2


# -- routes: a request's buckets, resolved once per tenant and route --------------------------------

T0 = 1_000_000.0


def test_a_route_takes_from_the_same_buckets_as_every_other_take() -> None:
    store = InMemoryRateLimitStore()
    calls, requests = Rate(burst=2, per_second=0.001), Rate(burst=100, per_second=1.0)
    route = LimitRoute((("tools/call", calls), ("requests", requests)))
    assert store.take_route_now("t", route, T0) is None
    assert store.take_now("t", "tools/call", calls, T0) == 0.0  # the second token, by another path
    refused = store.take_route_now("t", route, T0)
    assert refused is not None
    assert refused[0] == "tools/call"
    assert refused[1] == pytest.approx(1000.0)
    assert store.take_all_now("t", route.buckets, T0) == refused
    # The refusals spent nothing of `requests`: 99 of its 100 tokens are left.
    assert [store.take_now("t", "requests", requests, T0) for _ in range(100)].count(0.0) == 99


async def test_a_forgotten_tenants_route_starts_full() -> None:
    store = InMemoryRateLimitStore()
    route = LimitRoute((("requests", Rate(burst=1, per_second=0.001)),))
    assert store.take_route_now("t", route, T0) is None
    assert store.take_route_now("t", route, T0) is not None
    await store.forget("t")
    assert store.take_route_now("t", route, T0) is None
    assert store.take_route_now("t", route, T0) is not None


def test_a_route_survives_the_sweep_of_its_buckets() -> None:
    store = InMemoryRateLimitStore()
    fast = Rate(burst=1, per_second=1.0)
    route = LimitRoute((("requests", fast),))
    assert store.take_route_now("t", route, 0.0) is None  # full again a second later: swept below
    for index in range(10_000):
        store.take_now(f"other{index}", "requests", fast, 100.0 + index)
    later = 20_000.0
    # The bucket the route held was swept; the route must take from the one made since.
    assert store.take_now("t", "requests", fast, later) == 0.0
    refused = store.take_route_now("t", route, later)
    assert refused is not None
    assert refused[1] == pytest.approx(1.0)


def test_a_tenant_whose_limits_change_keeps_its_buckets_at_the_new_rate() -> None:
    store = InMemoryRateLimitStore()
    slow, fast = Rate(burst=1, per_second=0.001), Rate(burst=1, per_second=1.0)
    old, new = LimitRoute((("requests", slow),)), LimitRoute((("requests", fast),))
    assert store.take_route_now("t", old, T0) is None
    assert store.take_route_now("t", new, T0) is not None  # the same bucket, still empty
    assert store.take_route_now("t", new, T0 + 1) is None  # refilled at the new rate
    refused = store.take_route_now("t", old, T0 + 2)  # back at the old rate: 0.001 tokens since
    assert refused is not None
    assert refused[1] == pytest.approx(999.0)


# -- the limiter: what a request takes -------------------------------------------------------------


async def _no_host() -> ServerHost:
    raise AssertionError("the limiter never asks for a server")


ANYONE = Principal(owner="", tenant_id=None, host=_no_host)


def _call(request_id: int, name: Any) -> Message:
    return classify({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": name}})


def test_the_limiter_takes_for_requests_only_and_reads_the_limits_live() -> None:
    limits = RateLimits(TenantLimits(requests=Rate(1, 0.001)), clock=lambda: T0)
    limiter = limits.limiter(None)
    ping = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    for _ in range(3):  # notifications and responses never take a token
        assert limiter.limit(ANYONE, classify(ping)) is None
        assert limiter.limit(ANYONE, classify({"jsonrpc": "2.0", "id": 5, "result": {}})) is None
    assert limiter.limit(ANYONE, classify({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})) is None
    with pytest.raises(TooManyRequests) as refused:
        limiter.limit(ANYONE, _call(2, "echo"))
    assert refused.value.limit == "requests"
    assert refused.value.request_id == 2
    limits.default = TenantLimits()  # unlimited from the next request on
    assert limiter.limit(ANYONE, _call(3, "echo")) is None


def test_the_limiter_finds_a_tools_own_limit_by_its_name_only() -> None:
    limits = RateLimits(TenantLimits(tools={"slow": Rate(1, 0.001)}), clock=lambda: T0)
    limiter = limits.limiter(None)
    assert limiter.limit(ANYONE, _call(1, "slow")) is None
    with pytest.raises(TooManyRequests) as refused:
        limiter.limit(ANYONE, _call(2, "slow"))
    assert refused.value.limit == "tool:slow"
    # Other tools, and names that are no tool's (the server answers those), take nothing.
    for request_id, name in enumerate(("fast", ["slow"], {"slow": 1}, None, 7), start=3):
        assert limiter.limit(ANYONE, _call(request_id, name)) is None


def test_a_sweep_while_a_route_is_resolved_drops_none_of_its_buckets() -> None:
    store = InMemoryRateLimitStore()
    fast, slow = Rate(burst=1, per_second=1.0), Rate(burst=1, per_second=1e-6)
    store.take_now("t", "a", fast, 0.0)  # full again at 1.0: the sweep drops it
    for index in range(4095):  # spent, so kept; 4096 buckets: making the next one sweeps first
        store.take_now(f"other{index}", "x", slow, 0.0)
    route = LimitRoute((("a", fast), ("b", fast)))
    assert store.take_route_now("t", route, 10.0) is None  # making "b" swept "a"
    # The route took from the "a" that is there now, not from the one the sweep dropped.
    assert store.take_now("t", "a", fast, 10.0) > 0.0
