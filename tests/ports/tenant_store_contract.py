"""The contract every `TenantStore` keeps. Subscribe with a test class that provides `store_factory`."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from asgi_mcp import Credential, TenantConflict, TenantRecord, TenantStore

from ._contract import MAX_BUFFERED, TIMEOUT, StoreFactory, next_of, read_until_cut


def tenant(tenant_id: str, **fields: Any) -> TenantRecord:
    return TenantRecord(tenant_id=tenant_id, **fields)


def token_of(store: TenantStore, token: str, tenant_id: str, not_after: float | None = None) -> Credential:
    return Credential(digest=store.digest(token), tenant_id=tenant_id, not_after=not_after)


async def add(store: TenantStore, token: str, tenant_id: str, **fields: Any) -> None:
    await store.add(tenant(tenant_id, **fields), token_of(store, token, tenant_id))


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

    async def test_the_version_counts_the_writes(self, store_factory: StoreFactory[TenantStore]) -> None:
        async with store_factory() as store, store_factory() as other:
            assert await other.version() == 0
            await add(store, "tok-a", "alpha")
            await store.remove("alpha", policy="close", drain_timeout=0.0)
            assert await store.remove("alpha", policy="close", drain_timeout=0.0) is None  # no write
            assert await other.version() == 2
            assert (await other.snapshot()).version == 2

    async def test_add_then_read_on_another_handle(self, store_factory: StoreFactory[TenantStore]) -> None:
        async with store_factory() as writer, store_factory() as reader:
            record = tenant("alpha", label="alpha", plan="gold", metadata={"region": "eu", "tags": ["x", "ü"], "n": 3})
            credential = token_of(writer, "tok-a", "alpha", not_after=1_900_000_000.5)
            change = await writer.add(record, credential)
            assert (change.kind, change.record, change.credentials) == ("added", record, (credential,))
            assert await reader.get("alpha") == record
            assert await reader.credential(credential.digest) == credential
            assert await reader.get("bravo") is None
            assert await reader.credential(writer.digest("tok-unknown")) is None

    async def test_a_taken_tenant_id_or_token_is_refused(self, store_factory: StoreFactory[TenantStore]) -> None:
        async with store_factory() as store:
            await add(store, "tok-a", "alpha")
            before = await store.snapshot()
            with pytest.raises(TenantConflict):
                await add(store, "tok-b", "alpha")
            with pytest.raises(TenantConflict) as refused:
                await add(store, "tok-a", "bravo")
            assert isinstance(refused.value, ValueError)
            with pytest.raises(TenantConflict):
                await store.add(tenant("bravo"), token_of(store, "tok-b", "charlie"))
            assert await store.snapshot() == before  # nothing written, no version spent

    async def test_replace_bumps_the_generation(self, store_factory: StoreFactory[TenantStore]) -> None:
        async with store_factory() as store:
            assert await store.replace(tenant("alpha"), policy="close", drain_timeout=0) is None
            await add(store, "tok-a", "alpha", plan="free")
            change = await store.replace(
                tenant("alpha", plan="gold", generation=41), policy="drain", drain_timeout=12.5
            )
            assert change is not None
            assert (change.kind, change.policy, change.drain_timeout) == ("updated", "drain", 12.5)
            assert (change.record.plan, change.record.generation) == ("gold", 1)  # the store counts, not the caller
            assert await store.get("alpha") == change.record
            assert await store.credential(store.digest("tok-a")) == token_of(store, "tok-a", "alpha")

    async def test_remove_takes_every_token_of_the_tenant(self, store_factory: StoreFactory[TenantStore]) -> None:
        async with store_factory() as store:
            record = tenant("alpha", plan="gold")
            first, second = token_of(store, "tok-a", "alpha"), token_of(store, "tok-a2", "alpha", not_after=5.0)
            await store.add(record, first)
            await store.set_credential(second)
            change = await store.remove("alpha", policy="drain", drain_timeout=3.0)
            assert change is not None
            assert (change.kind, change.record, change.policy, change.drain_timeout) == (
                "removed",
                record,
                "drain",
                3.0,
            )
            assert sorted(change.credentials, key=lambda c: c.digest) == sorted([first, second], key=lambda c: c.digest)
            assert await store.get("alpha") is None
            assert await store.credential(first.digest) is None
            assert await store.credential(second.digest) is None
            assert await store.remove("alpha", policy="close", drain_timeout=0) is None
            await add(store, "tok-a", "alpha")  # its id and its tokens are free again

    async def test_credentials_come_and_go(self, store_factory: StoreFactory[TenantStore]) -> None:
        async with store_factory() as store:
            assert await store.set_credential(token_of(store, "tok-x", "nobody")) is None
            await add(store, "tok-a", "alpha")
            await add(store, "tok-b", "bravo")
            rotated = token_of(store, "tok-a2", "alpha")
            change = await store.set_credential(rotated)
            assert change is not None
            assert (change.kind, change.record.tenant_id, change.credentials) == ("credential_set", "alpha", (rotated,))
            # The old token gets an end: set again, with its expiry.
            ending = token_of(store, "tok-a", "alpha", not_after=1_800_000_000.0)
            await store.set_credential(ending)
            assert await store.credential(ending.digest) == ending
            with pytest.raises(TenantConflict):
                await store.set_credential(token_of(store, "tok-b", "alpha"))  # bravo's token
            change = await store.remove_credential(ending.digest)
            assert change is not None
            assert (change.kind, change.credentials) == ("credential_removed", (ending,))
            assert await store.remove_credential(ending.digest) is None
            assert await store.get("alpha") is not None  # the tenant stays
            snapshot = await store.snapshot()
            assert {(c.tenant_id, c.digest) for c in snapshot.credentials} == {
                ("alpha", rotated.digest),
                ("bravo", store.digest("tok-b")),
            }

    async def test_every_write_bumps_the_version_by_one(self, store_factory: StoreFactory[TenantStore]) -> None:
        async with store_factory() as store, store_factory() as other:
            start = (await store.snapshot()).version
            versions = [(await store.add(tenant("alpha"), token_of(store, "tok-a", "alpha"))).version]
            versions.append((await other.add(tenant("bravo"), token_of(other, "tok-b", "bravo"))).version)
            for write in (
                store.replace(tenant("alpha"), policy="close", drain_timeout=0),
                other.set_credential(token_of(other, "tok-a2", "alpha")),
                store.remove_credential(store.digest("tok-a")),
                other.remove("bravo", policy="close", drain_timeout=0),
            ):
                change = await write
                assert change is not None
                versions.append(change.version)
            assert versions == [start + n for n in range(1, 7)]
            snapshot = await other.snapshot()
            assert snapshot.version == start + 6
            assert [(r.tenant_id, r.generation) for r in snapshot.records] == [("alpha", 1)]
            assert snapshot.credentials == (token_of(store, "tok-a2", "alpha"),)

    async def test_changes_reach_every_handle_in_order(self, store_factory: StoreFactory[TenantStore]) -> None:
        async with store_factory() as writer, store_factory() as follower, follower.changes() as changes:
            snapshot = await follower.snapshot()
            await add(writer, "tok-a", "alpha", plan="free")
            await writer.replace(tenant("alpha", plan="gold"), policy="drain", drain_timeout=9)
            await writer.set_credential(token_of(writer, "tok-a2", "alpha"))
            await writer.remove("alpha", policy="close", drain_timeout=0)
            seen = [await next_of(changes) for _ in range(4)]
            assert [c.version for c in seen] == [snapshot.version + n for n in range(1, 5)]
            assert [(c.kind, c.record.plan, c.policy, c.drain_timeout) for c in seen] == [
                ("added", "free", "close", 0),
                ("updated", "gold", "drain", 9),
                ("credential_set", "gold", "close", 0),
                ("removed", "gold", "close", 0),
            ]

    async def test_a_subscriber_that_falls_behind_is_cut(self, store_factory: StoreFactory[TenantStore]) -> None:
        async with (
            store_factory() as store,
            store_factory() as slow_handle,
            slow_handle.changes() as slow,
            store.changes() as keeping_up,
        ):
            with anyio.fail_after(TIMEOUT):  # writes never wait for a subscriber
                for i in range(MAX_BUFFERED * 4):
                    await add(store, f"tok-{i}", f"t{i}")
                    assert (await next_of(keeping_up)).record.tenant_id == f"t{i}"
            got = [change.record.tenant_id for change in await read_until_cut(slow, MAX_BUFFERED * 4)]
            assert got == [f"t{i}" for i in range(len(got))]  # what it got is a prefix, in order

    async def test_only_data_is_stored(self, store_factory: StoreFactory[TenantStore]) -> None:
        async with store_factory() as store:
            with pytest.raises(TypeError):
                await store.add(tenant("alpha", metadata={"factory": object()}), token_of(store, "tok-a", "alpha"))
            assert await store.get("alpha") is None
            assert await store.credential(store.digest("tok-a")) is None
            metadata: dict[str, Any] = {"region": "eu"}
            await add(store, "tok-a", "alpha", metadata=metadata)
            metadata["region"] = "us"  # the caller's object is not the stored record
            stored = await store.get("alpha")
            assert stored is not None
            assert stored.metadata == {"region": "eu"}
