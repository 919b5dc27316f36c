"""`Tenants` over its tenant store: plans, metadata, expiry, and the one path every change takes.

The app-level behaviour of adding, removing and updating tokens under load is in tenancy/test_servers.py.
"""

from __future__ import annotations

import time

import anyio
import pytest

from asgi_mcp import Credential, InMemoryTenantStore, McpApp, TenantRecord, Tenants
from asgi_mcp._tenancy.tenants import CredentialEnd, SessionPolicy, Tenant
from tests.kit.mcp_servers import TOKEN_A, TOKEN_B, TOKEN_C, factory_of
from tests.kit.memory import TokenClient, serving
from tests.kit.messages import initialize

GUARD = 10.0


class Observer:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int]] = []
        self.tokens: list[tuple[str, str]] = []  # a token coming or going, apart from the tenant's changes

    def tenant_added(self, tenant: Tenant) -> None:
        self.seen.append(("added", tenant.tenant_id, tenant.generation))

    def tenant_removed(self, tenant: Tenant, policy: SessionPolicy, drain_timeout: float) -> None:
        self.seen.append((f"removed/{policy}/{drain_timeout:g}", tenant.tenant_id, tenant.generation))

    def tenant_updated(self, tenant: Tenant, policy: SessionPolicy, drain_timeout: float) -> None:
        self.seen.append((f"updated/{policy}/{drain_timeout:g}", tenant.tenant_id, tenant.generation))

    def token_rotated(self, tenant: Tenant, grace: float) -> None:
        self.tokens.append(("rotated", tenant.tenant_id))

    def credential_ended(self, tenant: Tenant, digest: bytes, reason: CredentialEnd) -> None:
        self.tokens.append((f"ended/{reason}", tenant.tenant_id))


def test_the_tokens_mapping_still_registers_factories() -> None:
    alpha = factory_of("alpha")
    tenants = Tenants({TOKEN_A: alpha})
    tenant = tenants.lookup(TOKEN_A)
    assert tenant is not None
    assert tenant.factory is alpha
    assert tenant.plan is None  # a factory given in code: the record names no plan
    assert tenant.tenant_id.startswith("tok-")
    assert tenants.lookup(TOKEN_B) is None


def test_plans_name_factories() -> None:
    gold, free = factory_of("gold"), factory_of("free")
    tenants = Tenants(plans={"gold": gold, "free": free})
    tenants.add(TOKEN_A, plan="free", label="alpha", metadata={"seats": 3})
    tenant = tenants.by_id("alpha")
    assert tenant is not None
    assert (tenant.factory, tenant.plan, tenant.metadata) == (free, "free", {"seats": 3})
    assert tenants.update(TOKEN_A, plan="gold")
    assert (tenant.factory, tenant.plan, tenant.generation) == (gold, "gold", 1)
    custom = factory_of("custom")
    assert tenants.update(TOKEN_A, custom)  # a factory in code; the tenant keeps its plan name
    assert (tenant.factory, tenant.plan, tenant.generation) == (custom, "gold", 2)
    # A plan name with a factory given: kept with the tenant (its limits may use it), factory as given.
    tenants.add(TOKEN_B, custom, plan="unlisted", label="bravo")
    bravo = tenants.by_id("bravo")
    assert bravo is not None
    assert (bravo.factory, bravo.plan) == (custom, "unlisted")
    with pytest.raises(ValueError, match="no plan of `plans` named 'platinum'"):
        tenants.add("tok-c-0123456789", plan="platinum")
    with pytest.raises(ValueError, match="no factory given"):
        tenants.add("tok-c-0123456789")
    with pytest.raises(ValueError, match="no plan of `plans` named 'platinum'"):
        tenants.update(TOKEN_A, plan="platinum")
    with pytest.raises(TypeError, match="plan 'broken'"):
        Tenants(plans={"broken": "not callable"})  # type: ignore[dict-item]


def test_refusals_leave_the_registry_as_it_was() -> None:
    observer = Observer()
    tenants = Tenants()
    tenants.subscribe(observer)
    tenants.add(TOKEN_A, factory_of("alpha"), label="alpha")
    with pytest.raises(ValueError, match="already registered"):
        tenants.add(TOKEN_A, factory_of("again"))
    with pytest.raises(ValueError, match="already in use"):
        tenants.add(TOKEN_B, factory_of("bravo"), label="alpha")
    with pytest.raises(ValueError, match="JSON"):
        tenants.add(TOKEN_B, factory_of("bravo"), metadata={"callback": print})
    with pytest.raises(TypeError):
        tenants.add(TOKEN_B, 42)  # type: ignore[arg-type]
    assert (len(tenants), tenants.ids(), observer.seen) == (1, ["alpha"], [("added", "alpha", 0)])


def test_expired_tokens_are_refused_and_end_their_tenant() -> None:
    observer = Observer()
    tenants = Tenants()
    tenants.subscribe(observer)
    tenants.add(TOKEN_A, factory_of("alpha"), label="alpha", not_after=time.time() - 1)
    tenants.add(TOKEN_B, factory_of("bravo"), label="bravo", not_after=time.time() + 3600)
    tenants.add(TOKEN_C, factory_of("charlie"), label="charlie", not_after=time.time() - 1)
    assert sorted(tenants.ids()) == ["alpha", "bravo", "charlie"]  # nothing ends before it is looked at
    assert tenants.lookup(TOKEN_A) is None
    assert not tenants.has(TOKEN_A)
    assert TOKEN_A not in tenants
    assert tenants.lookup(TOKEN_B) is not None
    # An expired token ends as a removal does (the tenant goes with its last token): once looked up,
    # or when `expire` runs (the app runs it at each token's time), whichever comes first.
    assert sorted(tenants.ids()) == ["bravo", "charlie"]
    assert tenants.expire() is not None  # bravo's time is still to come
    assert tenants.ids() == ["bravo"]
    assert not tenants.remove(TOKEN_A)
    assert [seen[:2] for seen in observer.seen[3:]] == [("removed/close/0", "alpha"), ("removed/close/0", "charlie")]


def test_every_change_reaches_the_observers_once_in_order() -> None:
    observer = Observer()
    tenants = Tenants()
    tenants.subscribe(observer)
    tenants.add(TOKEN_A, factory_of("alpha"), label="alpha")
    tenants.update(TOKEN_A, factory_of("alpha2"), policy="close", drain_timeout=0)
    tenants.remove(TOKEN_A, policy="drain", drain_timeout=5)
    assert not tenants.remove(TOKEN_A)
    assert not tenants.update(TOKEN_A, factory_of("alpha3"))
    assert observer.seen == [("added", "alpha", 0), ("updated/close/0", "alpha", 1), ("removed/drain/5", "alpha", 1)]


def test_changes_from_a_store_apply_by_plan() -> None:
    # What a worker mirroring a shared store does: each change the store announces goes through
    # `_apply`, with no factory of its own; the record's plan names it.
    gold = factory_of("gold")
    observer = Observer()
    mirror = Tenants(plans={"gold": gold})
    mirror.subscribe(observer)
    store = InMemoryTenantStore()  # another worker's writes
    first = Credential(digest=store.digest(TOKEN_A), tenant_id="alpha")
    rotated = Credential(digest=store.digest(TOKEN_B), tenant_id="alpha", not_after=time.time() + 60)
    writes = [
        store.add_nowait(TenantRecord(tenant_id="alpha", label="alpha", plan="gold"), first),
        store.set_credential_nowait(rotated),
        store.remove_credential_nowait(first.digest),
    ]
    for change in writes:
        assert change is not None
        mirror._apply(change)  # pyright: ignore[reportPrivateUsage]
    assert mirror.lookup(TOKEN_A) is None
    tenant = mirror.lookup(TOKEN_B)
    assert tenant is not None
    assert (tenant.tenant_id, tenant.factory) == ("alpha", gold)
    expired = store.set_credential_nowait(Credential(digest=rotated.digest, tenant_id="alpha", not_after=1.0))
    assert expired is not None
    mirror._apply(expired)  # pyright: ignore[reportPrivateUsage]
    assert mirror.lookup(TOKEN_B) is None
    assert mirror.expire() is None  # nothing still to come: the app's expiry loop does not spin on it
    assert observer.seen == [("added", "alpha", 0)]  # a token coming or going is not a tenant's change
    # The mirror's store holds nothing: a token expired there is refused, and ended by its writer.
    assert observer.tokens == [("ended/token_removed", "alpha")]
    removed = store.remove_nowait("alpha", policy="close", drain_timeout=0)
    assert removed is not None
    mirror._apply(removed)  # pyright: ignore[reportPrivateUsage]
    assert (mirror.ids(), observer.seen[-1]) == ([], ("removed/close/0", "alpha", 0))
    unknown = TenantRecord(tenant_id="bravo", plan="platinum")
    with pytest.raises(ValueError, match="no plan of `plans` named 'platinum'"):
        mirror._apply(store.add_nowait(unknown, Credential(digest=store.digest(TOKEN_B), tenant_id="bravo")))  # pyright: ignore[reportPrivateUsage]
    assert mirror.lookup(TOKEN_B) is None


def test_repr_names_ids_only() -> None:
    tenants = Tenants({TOKEN_A: factory_of("alpha")})
    tenant = tenants.lookup(TOKEN_A)
    assert tenant is not None
    assert TOKEN_A not in repr(tenants)
    assert tenant.digest.hex() not in repr(tenants)
    assert repr(tenants) == f"Tenants([{tenant.tenant_id!r}])"


@pytest.mark.anyio
async def test_an_expired_token_gets_401_over_asgi() -> None:
    tenants = Tenants(plans={"alpha": factory_of("alpha")})
    tenants.add(TOKEN_A, plan="alpha", label="alpha", not_after=time.time() + 3600)
    tenants.add(TOKEN_B, plan="alpha", label="bravo", not_after=time.time() - 0.001)
    with anyio.fail_after(GUARD):
        async with serving(McpApp(tenants=tenants)) as client:
            assert await TokenClient(client, TOKEN_A).open_session()
            response = await TokenClient(client, TOKEN_B).post(initialize(0))
            assert response.status == 401
            assert 'error="invalid_token"' in (response.header("www-authenticate") or "")


@pytest.mark.anyio
async def test_a_rotation_is_written_to_the_store_and_a_mirror_follows_it() -> None:
    clock = [1000.0]
    primary = Tenants(plans={"gold": factory_of("gold")}, clock=lambda: clock[0])
    primary.add(TOKEN_A, plan="gold", label="alpha")
    store = primary._store  # pyright: ignore[reportPrivateUsage]
    mirror = Tenants(plans={"gold": factory_of("gold")}, clock=lambda: clock[0])
    async with store.changes() as feed:
        assert primary.rotate_token(TOKEN_A, TOKEN_B, grace=60, not_after=5000.0) == "alpha"
        snapshot = await store.snapshot()
        ends = {credential.digest: credential.not_after for credential in snapshot.credentials}
        assert ends == {store.digest(TOKEN_A): 1060.0, store.digest(TOKEN_B): 5000.0}
        clock[0] = 1060.0
        assert primary.expire() == 5000.0
        kinds = []
        for _ in range(3):
            change = await feed.__anext__()
            kinds.append(change.kind)
    assert kinds == ["credential_set", "credential_set", "credential_removed"]
    assert [credential.digest for credential in (await store.snapshot()).credentials] == [store.digest(TOKEN_B)]
    # A worker mirroring a store gets the same writes as changes, and follows the rotation.
    fresh = InMemoryTenantStore()
    writes = [
        fresh.add_nowait(
            TenantRecord(tenant_id="alpha", label="alpha", plan="gold"),
            Credential(digest=fresh.digest(TOKEN_A), tenant_id="alpha"),
        ),
        fresh.set_credential_nowait(Credential(digest=fresh.digest(TOKEN_B), tenant_id="alpha")),
        fresh.set_credential_nowait(Credential(digest=fresh.digest(TOKEN_A), tenant_id="alpha", not_after=1060.0)),
    ]
    clock[0] = 1000.0
    for change in writes:
        assert change is not None
        mirror._apply(change)  # pyright: ignore[reportPrivateUsage]
    assert mirror.lookup(TOKEN_A) is mirror.lookup(TOKEN_B) is not None
    clock[0] = 1060.0
    assert mirror.lookup(TOKEN_A) is None
    assert mirror.lookup(TOKEN_B) is not None
