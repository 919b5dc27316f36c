"""The contract every `FleetRoster` keeps. Subscribe with a test class that provides `store_factory`.

Ageing out is watched on the roster itself (bounded polling of `alive()`): a record's time to live runs
on the store's clock (Redis's own expiry), which a test cannot move.
"""

from __future__ import annotations

import anyio
import pytest

from asgi_mcp import FleetRoster, WorkerRecord

from ._contract import TIMEOUT, StoreFactory

SHORT_TTL = 0.2
LONG_TTL = 60.0


def worker(worker_id: str, **counts: int) -> WorkerRecord:
    return WorkerRecord(
        worker_id=worker_id,
        started_at=1_800_000_000.5,
        beat_at=1_800_000_010.25,
        sessions=sum(counts.values()) + 1,  # one session without a tenant
        sessions_per_tenant=counts,
    )


async def ids_alive(roster: FleetRoster) -> list[str]:
    return [record.worker_id for record in await roster.alive()]


async def until_gone(roster: FleetRoster, worker_id: str) -> None:
    with anyio.fail_after(TIMEOUT):
        while worker_id in await ids_alive(roster):  # noqa: ASYNC110 - the store's clock decides
            await anyio.sleep(SHORT_TTL / 4)


class FleetRosterContract:
    pytestmark = pytest.mark.anyio

    @pytest.fixture
    def store_factory(self) -> StoreFactory[FleetRoster]:
        raise NotImplementedError("the implementation's test class provides store_factory")

    async def test_a_beat_is_read_back_on_another_handle(self, store_factory: StoreFactory[FleetRoster]) -> None:
        async with store_factory() as one, store_factory() as other:
            record = worker("w-1", alpha=2, **{"a:b": 1})
            await one.beat(record, ttl=LONG_TTL)
            await other.beat(worker("w-0"), ttl=LONG_TTL)
            assert await other.alive() == [worker("w-0"), record]  # by worker id
            assert await one.alive() == await other.alive()

    async def test_a_beat_replaces_the_workers_record(self, store_factory: StoreFactory[FleetRoster]) -> None:
        async with store_factory() as roster:
            await roster.beat(worker("w-1", alpha=2), ttl=LONG_TTL)
            await roster.beat(worker("w-1", bravo=1), ttl=LONG_TTL)
            assert await roster.alive() == [worker("w-1", bravo=1)]

    async def test_a_worker_that_leaves_is_gone_at_once(self, store_factory: StoreFactory[FleetRoster]) -> None:
        async with store_factory() as roster, store_factory() as other:
            await roster.beat(worker("w-1"), ttl=LONG_TTL)
            await roster.beat(worker("w-2"), ttl=LONG_TTL)
            assert await other.leave("w-1") is True
            assert await ids_alive(roster) == ["w-2"]
            assert await roster.leave("w-1") is False
            assert await roster.leave("w-unknown") is False

    async def test_a_worker_that_stops_beating_ages_out_and_one_that_beats_stays(
        self, store_factory: StoreFactory[FleetRoster]
    ) -> None:
        async with store_factory() as roster:
            await roster.beat(worker("w-beating"), ttl=SHORT_TTL)
            await roster.beat(worker("w-killed"), ttl=SHORT_TTL)
            await roster.beat(worker("w-beating"), ttl=LONG_TTL)  # its next beat
            await until_gone(roster, "w-killed")
            assert await ids_alive(roster) == ["w-beating"]
            assert await roster.leave("w-killed") is False  # aged out: nothing to remove

    async def test_the_time_to_live_must_be_positive(self, store_factory: StoreFactory[FleetRoster]) -> None:
        async with store_factory() as roster:
            for ttl in (0.0, -1.0, float("nan")):
                with pytest.raises(ValueError, match="ttl"):
                    await roster.beat(worker("w-1"), ttl=ttl)
            assert await roster.alive() == []
