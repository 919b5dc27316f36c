"""The in-memory implementations against the port contracts, and what is theirs alone.

Each handle a contract test opens is the same object: in one process, every "worker" shares it.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

import anyio
import pytest

from asgi_mcp import (
    BusMessage,
    Credential,
    FleetRoster,
    InMemoryFleetRoster,
    InMemoryMessageBus,
    InMemorySessionDirectory,
    InMemorySessionSlots,
    InMemoryTenantStore,
    MessageBus,
    SessionDirectory,
    SessionSlots,
    SubscriptionCut,
    TenantRecord,
    TenantStore,
)

from ._contract import MAX_BUFFERED, StoreFactory, next_of
from .fleet_roster_contract import FleetRosterContract
from .message_bus_contract import MessageBusContract
from .session_directory_contract import SessionDirectoryContract
from .session_slots_contract import SLOT_TTL, SessionSlotsContract
from .tenant_store_contract import TenantStoreContract


def shared(store: object) -> StoreFactory[object]:
    @asynccontextmanager
    async def handle() -> AsyncGenerator[object, None]:
        yield store

    return handle


class TestInMemoryTenantStore(TenantStoreContract):
    @pytest.fixture
    def store_factory(self) -> StoreFactory[TenantStore]:
        return shared(InMemoryTenantStore(max_buffered=MAX_BUFFERED))  # type: ignore[return-value]


class TestInMemorySessionDirectory(SessionDirectoryContract):
    @pytest.fixture
    def store_factory(self) -> StoreFactory[SessionDirectory]:
        return shared(InMemorySessionDirectory())  # type: ignore[return-value]


class TestInMemoryFleetRoster(FleetRosterContract):
    @pytest.fixture
    def store_factory(self) -> StoreFactory[FleetRoster]:
        return shared(InMemoryFleetRoster())  # type: ignore[return-value]


class TestInMemorySessionSlots(SessionSlotsContract):
    @pytest.fixture
    def store_factory(self) -> StoreFactory[SessionSlots]:
        return shared(InMemorySessionSlots(ttl=SLOT_TTL))  # type: ignore[return-value]


class TestInMemoryMessageBus(MessageBusContract):
    @pytest.fixture
    def store_factory(self) -> StoreFactory[MessageBus]:
        return shared(InMemoryMessageBus(max_buffered=MAX_BUFFERED))  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("port", "implementation"),
    [
        (TenantStore, InMemoryTenantStore),
        (SessionDirectory, InMemorySessionDirectory),
        (MessageBus, InMemoryMessageBus),
        (SessionSlots, InMemorySessionSlots),
    ],
)
def test_every_method_of_the_port_is_implemented_alike(port: type, implementation: type) -> None:
    methods = {name: member for name, member in vars(port).items() if callable(member) and not name.startswith("_")}
    assert methods
    for name, declared in methods.items():
        implemented = getattr(implementation, name)
        assert inspect.iscoroutinefunction(implemented) == inspect.iscoroutinefunction(declared), name
        assert list(inspect.signature(implemented).parameters) == list(inspect.signature(declared).parameters), name


def test_nowait_twins_write_what_the_port_reads() -> None:
    store = InMemoryTenantStore()
    record = TenantRecord(tenant_id="alpha", plan="gold")
    first = Credential(digest=store.digest("tok-a"), tenant_id="alpha")
    second = Credential(digest=store.digest("tok-a2"), tenant_id="alpha", not_after=10.0)
    changes = [
        store.add_nowait(record, first),
        store.replace_nowait(record, policy="drain", drain_timeout=1.0),
        store.set_credential_nowait(second),
        store.remove_credential_nowait(first.digest),
        store.remove_nowait("alpha", policy="close", drain_timeout=0.0),
    ]
    assert [(c.version, c.kind, c.record.generation, c.credentials) for c in changes if c is not None] == [
        (1, "added", 0, (first,)),
        (2, "updated", 1, ()),
        (3, "credential_set", 1, (second,)),
        (4, "credential_removed", 1, (first,)),
        (5, "removed", 1, (second,)),
    ]
    assert len(store) == 0
    assert store.replace_nowait(record, policy="close", drain_timeout=0) is None
    assert "tok-a" not in repr(store)
    assert store.digest("tok-a").hex() not in repr(store)


@pytest.mark.parametrize("max_buffered", [0, -1])
def test_buffers_must_hold_something(max_buffered: int) -> None:
    with pytest.raises(ValueError, match="max_buffered"):
        InMemoryMessageBus(max_buffered=max_buffered)
    with pytest.raises(ValueError, match="max_buffered"):
        InMemoryTenantStore(max_buffered=max_buffered)


@pytest.mark.anyio
async def test_a_message_carrying_another_tenant_is_dropped() -> None:
    # The bus's own key scheme cannot mix tenants, so the defence is shown by delivering past it: a
    # backend that maps two (tenant, channel) pairs onto one name hands the subscriber such a message.
    bus = InMemoryMessageBus()
    async with bus.subscribe("alpha", "c") as messages:
        stray = BusMessage("bravo", "c", '"bravo\'s"')
        bus._fanout.deliver(("alpha", "c"), stray)  # pyright: ignore[reportPrivateUsage]
        bus._fanout.deliver(("alpha", "c"), BusMessage("alpha", "d", '"other channel"'))  # pyright: ignore[reportPrivateUsage]
        await bus.publish("alpha", "c", '"alpha\'s"')
        assert await next_of(messages) == BusMessage("alpha", "c", '"alpha\'s"')


@pytest.mark.anyio
async def test_close_ends_subscriptions_without_a_cut() -> None:
    bus = InMemoryMessageBus()
    async with bus.subscribe("alpha", "c") as messages, bus.subscribe("bravo", "c") as others:
        await bus.publish("alpha", "c", "1")
        assert (bus.subscribers("alpha", "c"), bus.subscribers("bravo", "c")) == (1, 1)
        bus.close()
        with anyio.fail_after(5):
            assert [m.payload async for m in messages] == ["1"]  # what it held, then the end
            assert [m.payload async for m in others] == []
        assert bus.subscribers("alpha", "c") == 0
        await bus.publish("alpha", "c", "2")  # nobody left: nothing to do


@pytest.mark.anyio
async def test_a_cut_subscriber_no_longer_counts() -> None:
    bus = InMemoryMessageBus(max_buffered=1)
    async with bus.subscribe("alpha", "c") as messages:
        await bus.publish("alpha", "c", "1")
        await bus.publish("alpha", "c", "2")
        assert bus.subscribers("alpha", "c") == 0
        assert (await next_of(messages)).payload == "1"
        with pytest.raises(SubscriptionCut):
            await next_of(messages)
