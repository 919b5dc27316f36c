"""The contract every `TenantStore` keeps. Subscribe with a test class that provides `store_factory`."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from asgi_mcp import TenantConflict, TenantRecord, TenantStore

from ._contract import MAX_BUFFERED, TIMEOUT, StoreFactory, next_of, read_until_cut


def record_for(store: TenantStore, token: str, tenant_id: str, **fields: Any) -> TenantRecord:
    return TenantRecord(digest=store.digest(token), tenant_id=tenant_id, **fields)


class TenantStoreContract:
    pytestmark = pytest.mark.anyio

    @pytest.fixture
    def store_factory(self) -> StoreFactory[TenantStore]:
        raise NotImplementedError("the implementation's test class provides store_factory")

    async def test_digest_is_stable_and_hides_the_token(self, store_factory: StoreFactory[TenantStore]) -> None:
        async with store_factory() as store, store_factory() as other:
            token = "tok-secret-0123456789abcdef"
            digest = store.digest(token)
            assert isinstance(digest, bytes)
            assert len(digest) >= 16
            assert digest == store.digest(token) == other.digest(token)  # every worker agrees
            assert digest != store.digest(token + "x")
            assert token.encode() not in digest

    async def test_add_then_get_on_another_handle(self, store_factory: StoreFactory[TenantStore]) -> None:
        async with store_factory() as writer, store_factory() as reader:
            record = record_for(
                writer,
                "tok-a",
                "alpha",
                label="alpha",
                plan="gold",
                metadata={"region": "eu", "seats": 3, "tags": ["x", "ü"]},
                not_after=1_900_000_000.5,
            )
            change = await writer.add(record)
            assert (change.kind, change.record) == ("added", record)
            assert await reader.get(record.digest) == record
            assert await reader.get(writer.digest("tok-unknown")) is None

    async def test_a_taken_token_or_tenant_id_is_refused(self, store_factory: StoreFactory[TenantStore]) -> None:
        async with store_factory() as store:
            await store.add(record_for(store, "tok-a", "alpha"))
            before = await store.snapshot()
            with pytest.raises(TenantConflict):
                await store.add(record_for(store, "tok-a", "other-id"))
            with pytest.raises(TenantConflict) as refused:
                await store.add(record_for(store, "tok-b", "alpha"))
            assert isinstance(refused.value, ValueError)
            assert await store.snapshot() == before  # nothing written, no version spent
            assert await store.get(store.digest("tok-b")) is None

    async def test_replace_bumps_the_generation_and_keeps_the_id(
        self, store_factory: StoreFactory[TenantStore]
    ) -> None:
        async with store_factory() as store:
            assert await store.replace(record_for(store, "tok-a", "alpha"), policy="close", drain_timeout=0) is None
            await store.add(record_for(store, "tok-a", "alpha", plan="free"))
            change = await store.replace(
                record_for(store, "tok-a", "alpha", plan="gold", generation=41), policy="drain", drain_timeout=12.5
            )
            assert change is not None
            assert (change.kind, change.policy, change.drain_timeout) == ("updated", "drain", 12.5)
            assert (change.record.plan, change.record.generation) == ("gold", 1)  # the store counts, not the caller
            assert await store.get(store.digest("tok-a")) == change.record
            with pytest.raises(TenantConflict):
                await store.replace(record_for(store, "tok-a", "renamed"), policy="close", drain_timeout=0)
            stored = await store.get(store.digest("tok-a"))
            assert stored is not None
            assert (stored.tenant_id, stored.generation) == ("alpha", 1)

    async def test_remove_returns_what_was_stored(self, store_factory: StoreFactory[TenantStore]) -> None:
        async with store_factory() as store:
            record = record_for(store, "tok-a", "alpha", plan="gold")
            await store.add(record)
            change = await store.remove(record.digest, policy="drain", drain_timeout=3.0)
            assert change is not None
            assert (change.kind, change.record, change.policy, change.drain_timeout) == (
                "removed",
                record,
                "drain",
                3.0,
            )
            assert await store.get(record.digest) is None
            assert await store.remove(record.digest, policy="close", drain_timeout=0) is None
            # Its tenant id and token are free again.
            await store.add(record_for(store, "tok-b", "alpha"))
            await store.add(record_for(store, "tok-a", "alpha-2"))

    async def test_every_write_bumps_the_version_by_one(self, store_factory: StoreFactory[TenantStore]) -> None:
        async with store_factory() as store, store_factory() as other:
            start = (await store.snapshot()).version
            versions = [
                (await store.add(record_for(store, "tok-a", "alpha"))).version,
                (await other.add(record_for(other, "tok-b", "bravo"))).version,
            ]
            replaced = await store.replace(record_for(store, "tok-a", "alpha"), policy="close", drain_timeout=0)
            removed = await other.remove(other.digest("tok-b"), policy="close", drain_timeout=0)
            assert replaced is not None
            assert removed is not None
            versions += [replaced.version, removed.version]
            assert versions == [start + 1, start + 2, start + 3, start + 4]
            snapshot = await other.snapshot()
            assert snapshot.version == start + 4
            assert [(r.tenant_id, r.generation) for r in snapshot.records] == [("alpha", 1)]

    async def test_changes_reach_every_handle_in_order(self, store_factory: StoreFactory[TenantStore]) -> None:
        async with store_factory() as writer, store_factory() as follower, follower.changes() as changes:
            snapshot = await follower.snapshot()
            await writer.add(record_for(writer, "tok-a", "alpha", plan="free"))
            await writer.replace(record_for(writer, "tok-a", "alpha", plan="gold"), policy="drain", drain_timeout=9)
            await writer.remove(writer.digest("tok-a"), policy="close", drain_timeout=0)
            seen = [await next_of(changes) for _ in range(3)]
            assert [c.version for c in seen] == [snapshot.version + 1, snapshot.version + 2, snapshot.version + 3]
            assert [(c.kind, c.record.plan, c.policy) for c in seen] == [
                ("added", "free", "close"),
                ("updated", "gold", "drain"),
                ("removed", "gold", "close"),
            ]
            assert seen[1].drain_timeout == 9

    async def test_a_subscriber_that_falls_behind_is_cut(self, store_factory: StoreFactory[TenantStore]) -> None:
        async with (
            store_factory() as store,
            store_factory() as slow_handle,
            slow_handle.changes() as slow,
            store.changes() as keeping_up,
        ):
            with anyio.fail_after(TIMEOUT):  # writes never wait for a subscriber
                for i in range(MAX_BUFFERED * 4):
                    await store.add(record_for(store, f"tok-{i}", f"t{i}"))
                    assert (await next_of(keeping_up)).record.tenant_id == f"t{i}"
            got = [item.record.tenant_id for item in await read_until_cut(slow, MAX_BUFFERED * 4)]
            assert got == [f"t{i}" for i in range(len(got))]  # what it got is a prefix, in order
            assert len(got) < MAX_BUFFERED * 4

    async def test_only_data_is_stored(self, store_factory: StoreFactory[TenantStore]) -> None:
        async with store_factory() as store:
            with pytest.raises(TypeError):
                await store.add(record_for(store, "tok-a", "alpha", metadata={"factory": object()}))
            assert await store.get(store.digest("tok-a")) is None
            metadata: dict[str, Any] = {"region": "eu"}
            await store.add(record_for(store, "tok-a", "alpha", metadata=metadata))
            metadata["region"] = "us"  # the caller's object is not the stored record
            stored = await store.get(store.digest("tok-a"))
            assert stored is not None
            assert stored.metadata == {"region": "eu"}
