"""Token buckets (sans-IO), the in-memory rate-limit store against the store contract, and the
limit policy's choice of buckets and limits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgi_mcp._core.errors import RATE_LIMITED, TooManyRequests
from asgi_mcp._core.token_bucket import Rate, new_bucket, retry_after_header, take
from asgi_mcp._ports.rate_limits import InMemoryRateLimitStore, RateLimitStore
from asgi_mcp._tenancy.limits import RateLimits, TenantLimits

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
