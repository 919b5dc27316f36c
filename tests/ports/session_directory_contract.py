"""The contract every `SessionDirectory` keeps. Subscribe with a test class that provides `store_factory`."""

from __future__ import annotations

from typing import Any

import pytest

from asgi_mcp import SessionDirectory, SessionRecord

from ._contract import StoreFactory

INITIALIZE: dict[str, Any] = {
    "protocolVersion": "2025-11-25",
    "capabilities": {"elicitation": {"form": {}}, "sampling": {}},
    "clientInfo": {"name": "probe", "version": "1.0", "title": "Prøbe"},
}


def session(session_id: str, tenant_id: str | None = "alpha", **fields: Any) -> SessionRecord:
    values: dict[str, Any] = {
        "owner": "t:" + "ab" * 32,
        "protocol_version": "2025-11-25",
        "client_capabilities": INITIALIZE["capabilities"],
        "initialize_params": INITIALIZE,
        "created_at": 1_800_000_000.25,
        "last_seen": 1_800_000_000.25,
    }
    values.update(fields)
    return SessionRecord(session_id=session_id, tenant_id=tenant_id, **values)


class SessionDirectoryContract:
    pytestmark = pytest.mark.anyio

    @pytest.fixture
    def store_factory(self) -> StoreFactory[SessionDirectory]:
        raise NotImplementedError("the implementation's test class provides store_factory")

    async def test_a_record_is_read_back_on_another_handle(self, store_factory: StoreFactory[SessionDirectory]) -> None:
        async with store_factory() as writer, store_factory() as reader:
            record = session("s-1")
            await writer.record(record)
            assert await reader.lookup("s-1") == record
            assert await reader.lookup("s-unknown") is None

    async def test_record_overwrites_and_moves_between_tenants(
        self, store_factory: StoreFactory[SessionDirectory]
    ) -> None:
        async with store_factory() as directory:
            await directory.record(session("s-1", "alpha"))
            moved = session("s-1", "bravo", protocol_version="2025-06-18")
            await directory.record(moved)
            assert await directory.lookup("s-1") == moved
            assert await directory.sessions_of("alpha") == frozenset()
            assert await directory.sessions_of("bravo") == {"s-1"}

    async def test_sessions_are_kept_by_tenant(self, store_factory: StoreFactory[SessionDirectory]) -> None:
        async with store_factory() as directory:
            for session_id, tenant_id in [("s-1", "alpha"), ("s-2", "alpha"), ("s-3", "a:b"), ("s-4", None)]:
                await directory.record(session(session_id, tenant_id))
            assert await directory.sessions_of("alpha") == {"s-1", "s-2"}
            # Tenant ids are whole keys: "a:b" is neither "a" nor a prefix of anything.
            assert await directory.sessions_of("a:b") == {"s-3"}
            assert await directory.sessions_of("a") == frozenset()
            assert await directory.sessions_of(None) == {"s-4"}
            assert await directory.sessions_of("") == frozenset()

    async def test_forget_is_idempotent(self, store_factory: StoreFactory[SessionDirectory]) -> None:
        async with store_factory() as directory, store_factory() as other:
            await directory.record(session("s-1"))
            await directory.record(session("s-2"))
            assert await other.forget("s-1") is True
            assert await directory.forget("s-1") is False
            assert await directory.lookup("s-1") is None
            assert await directory.sessions_of("alpha") == {"s-2"}
            assert await directory.forget("s-2") is True
            assert await directory.sessions_of("alpha") == frozenset()

    async def test_touch_moves_last_seen_forward_only(self, store_factory: StoreFactory[SessionDirectory]) -> None:
        async with store_factory() as directory:
            assert await directory.touch("s-1", 5.0) is False
            await directory.record(session("s-1", created_at=100.0, last_seen=100.0))
            assert await directory.touch("s-1", 160.5) is True
            assert await directory.touch("s-1", 130.0) is True  # a late writer never moves it back
            record = await directory.lookup("s-1")
            assert record is not None
            assert (record.created_at, record.last_seen) == (100.0, 160.5)
            assert record == session("s-1", created_at=100.0, last_seen=160.5)  # nothing else changed

    async def test_only_data_is_stored(self, store_factory: StoreFactory[SessionDirectory]) -> None:
        async with store_factory() as directory:
            with pytest.raises(TypeError):
                await directory.record(session("s-1", initialize_params={"callback": object()}))
            assert await directory.lookup("s-1") is None
            assert await directory.sessions_of("alpha") == frozenset()
            params: dict[str, Any] = {"clientInfo": {"name": "a"}}
            await directory.record(session("s-1", initialize_params=params))
            params["clientInfo"]["name"] = "changed"  # the caller's object is not the stored record
            record = await directory.lookup("s-1")
            assert record is not None
            assert record.initialize_params == {"clientInfo": {"name": "a"}}
