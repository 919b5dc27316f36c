"""The contract every `SessionSlots` keeps. Subscribe with a test class that provides `store_factory`,
whose slots live `SLOT_TTL` seconds."""

from __future__ import annotations

import anyio
import pytest

from asgi_mcp import SessionSlots

from ._contract import TIMEOUT, StoreFactory

SLOT_TTL = 60.0
T0 = 1_800_000_000.0


class SessionSlotsContract:
    pytestmark = pytest.mark.anyio

    @pytest.fixture
    def store_factory(self) -> StoreFactory[SessionSlots]:
        raise NotImplementedError("the implementation's test class provides store_factory")

    async def test_a_tenant_gets_cap_slots_across_handles(self, store_factory: StoreFactory[SessionSlots]) -> None:
        async with store_factory() as first, store_factory() as second:
            assert await first.reserve("alpha", "s-1", 2, T0)
            assert await second.reserve("alpha", "s-2", 2, T0)
            assert not await first.reserve("alpha", "s-3", 2, T0)
            assert not await second.reserve("alpha", "s-3", 2, T0)
            assert await second.count("alpha", T0) == 2
            # A session that holds its slot keeps it; other tenants count apart.
            assert await first.reserve("alpha", "s-1", 2, T0)
            assert await first.reserve("bravo", "s-3", 2, T0)
            assert await first.count("bravo", T0) == 1

    async def test_a_released_slot_is_free_for_another_handle(self, store_factory: StoreFactory[SessionSlots]) -> None:
        async with store_factory() as first, store_factory() as second:
            assert await first.reserve("alpha", "s-1", 1, T0)
            assert not await second.reserve("alpha", "s-2", 1, T0)
            await second.release("alpha", "s-1")
            await first.release("alpha", "s-1")  # idempotent
            await first.release("alpha", "s-unknown")
            assert await second.reserve("alpha", "s-2", 1, T0)
            assert await first.count("alpha", T0) == 1

    async def test_a_slot_not_renewed_lapses_after_its_ttl(self, store_factory: StoreFactory[SessionSlots]) -> None:
        async with store_factory() as slots:
            assert await slots.reserve("alpha", "s-1", 1, T0)
            assert await slots.count("alpha", T0 + SLOT_TTL - 1) == 1
            assert not await slots.reserve("alpha", "s-2", 1, T0 + SLOT_TTL - 1)
            assert await slots.count("alpha", T0 + SLOT_TTL + 1) == 0
            assert await slots.reserve("alpha", "s-2", 1, T0 + SLOT_TTL + 1)

    async def test_renew_moves_the_lapse_and_never_brings_a_slot_back(
        self, store_factory: StoreFactory[SessionSlots]
    ) -> None:
        async with store_factory() as slots:
            assert await slots.reserve("alpha", "s-1", 2, T0)
            assert await slots.reserve("alpha", "s-2", 2, T0)
            await slots.release("alpha", "s-2")
            await slots.renew("alpha", ["s-1", "s-2", "s-unknown"], T0 + 30)
            await slots.renew("alpha", ["s-1"], T0 + 10)  # a late renewal never moves it back
            await slots.renew("alpha", [], T0 + 40)
            later = T0 + SLOT_TTL + 20
            assert await slots.count("alpha", later) == 1
            assert await slots.count("alpha", T0 + 30 + SLOT_TTL + 1) == 0
            assert await slots.reserve("alpha", "s-3", 2, later)
            assert not await slots.reserve("alpha", "s-4", 2, later)

    async def test_concurrent_reserves_never_overshoot_the_cap(self, store_factory: StoreFactory[SessionSlots]) -> None:
        granted: list[bool] = []
        async with store_factory() as first, store_factory() as second:

            async def one(slots: SessionSlots, index: int) -> None:
                granted.append(await slots.reserve("alpha", f"s-{index}", 5, T0))

            with anyio.fail_after(TIMEOUT):
                async with anyio.create_task_group() as tg:
                    for index in range(20):
                        tg.start_soon(one, first if index % 2 else second, index)
            assert granted.count(True) == 5
            assert await first.count("alpha", T0) == 5
