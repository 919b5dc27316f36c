"""The contract every `RateLimitStore` keeps. A store's test module subclasses `RateLimitStoreContract`
and provides a `store` fixture (a Redis store runs these same tests against a real Redis)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from asgi_mcp._core.token_bucket import Rate

PER_MINUTE_3 = Rate.per_minute(3)  # burst 3, one token every 20 s
T0 = 1_000_000.0


class RateLimitStoreContract:
    """Behaviour over the port's async interface only."""

    pytestmark = pytest.mark.anyio  # on the class: a subclass in another module keeps it

    async def test_a_new_bucket_starts_full_and_refuses_past_its_burst(self, store: Any) -> None:
        waits = [await store.take("t1", "requests", PER_MINUTE_3, T0) for _ in range(4)]
        assert waits[:3] == [0.0, 0.0, 0.0]
        assert waits[3] == pytest.approx(20.0)

    async def test_a_refusal_takes_nothing_and_names_the_true_wait(self, store: Any) -> None:
        for _ in range(3):
            await store.take("t1", "requests", PER_MINUTE_3, T0)
        assert await store.take("t1", "requests", PER_MINUTE_3, T0 + 5) == pytest.approx(15.0)
        assert await store.take("t1", "requests", PER_MINUTE_3, T0 + 19) == pytest.approx(1.0)
        assert await store.take("t1", "requests", PER_MINUTE_3, T0 + 20) == 0.0
        assert await store.take("t1", "requests", PER_MINUTE_3, T0 + 20) > 0.0

    async def test_refill_never_exceeds_the_burst(self, store: Any) -> None:
        await store.take("t1", "requests", PER_MINUTE_3, T0)
        later = T0 + 3600
        waits = [await store.take("t1", "requests", PER_MINUTE_3, later) for _ in range(4)]
        assert waits[:3] == [0.0, 0.0, 0.0]
        assert waits[3] > 0.0

    async def test_buckets_are_separate_per_tenant_and_per_limit(self, store: Any) -> None:
        for _ in range(3):
            await store.take("t1", "tools/call", PER_MINUTE_3, T0)
        assert await store.take("t1", "tools/call", PER_MINUTE_3, T0) > 0.0
        assert await store.take("t2", "tools/call", PER_MINUTE_3, T0) == 0.0
        assert await store.take("t1", "requests", PER_MINUTE_3, T0) == 0.0

    async def test_a_clock_stepping_back_adds_no_tokens(self, store: Any) -> None:
        for _ in range(3):
            await store.take("t1", "requests", PER_MINUTE_3, T0)
        assert await store.take("t1", "requests", PER_MINUTE_3, T0 - 100) > 0.0

    async def test_forget_drops_only_that_tenants_buckets(self, store: Any) -> None:
        for tenant in ("t1", "t2"):
            for _ in range(3):
                await store.take(tenant, "requests", PER_MINUTE_3, T0)
        await store.forget("t1")
        assert await store.take("t1", "requests", PER_MINUTE_3, T0) == 0.0
        assert await store.take("t2", "requests", PER_MINUTE_3, T0) > 0.0

    async def test_concurrent_takes_never_overspend(self, store: Any) -> None:
        allowed: list[float] = []

        async def one() -> None:
            allowed.append(await store.take("t1", "burst", Rate(burst=10, per_second=0.001), T0))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for _ in range(25):
                    tg.start_soon(one)
        assert sorted(allowed).count(0.0) == 10

    async def test_take_all_takes_in_order_and_stops_at_the_first_refusal(self, store: Any) -> None:
        narrow, broad = Rate(burst=1, per_second=0.1), Rate(burst=5, per_second=0.1)
        buckets = [("tool:slow", narrow), ("requests", broad)]
        assert await store.take_all("t1", buckets, T0) is None
        refused = await store.take_all("t1", buckets, T0 + 2)
        assert refused is not None
        assert refused[0] == "tool:slow"
        assert refused[1] == pytest.approx(8.0)
        # The refusal spent nothing of the broader bucket: four of its five tokens are left.
        assert [await store.take("t1", "requests", broad, T0 + 2) for _ in range(5)].count(0.0) == 4
        assert await store.take_all("t1", [], T0) is None
