"""The sans-IO session table, driven with explicit `now` values: no clock, no sleeping."""

from __future__ import annotations

import pytest

from asgi_mcp import ProtocolError
from asgi_mcp._core.errors import SERVER_BUSY
from asgi_mcp._core.session_table import SessionEntry, SessionTable
from asgi_mcp._core.states import SessionState

TIMEOUT = 10.0


def table(max_sessions: int = 100, idle_timeout: float | None = TIMEOUT) -> SessionTable[str]:
    return SessionTable(max_sessions=max_sessions, idle_timeout=idle_timeout)


def opened(
    t: SessionTable[str], session_id: str, now: float = 0.0, owner: str = "", tenant: str | None = None
) -> SessionEntry[str]:
    """A session through its whole opening: admitted, initialized, its initialize exchange ended."""
    entry = t.open(session_id, owner=owner, tenant_id=tenant, value=session_id, now=now)
    t.activate(entry)
    t.end(entry, now)
    return entry


def heap_size(t: SessionTable[str]) -> int:
    return len(t._deadlines)


class TestAdmission:
    def test_limit_is_503_and_frees_on_remove(self) -> None:
        t = table(max_sessions=2)
        opened(t, "a")
        opened(t, "b")
        with pytest.raises(ProtocolError) as caught:
            t.open("c", owner="", tenant_id=None, value="c", now=0)
        assert (caught.value.status, caught.value.code) == (503, SERVER_BUSY)
        assert len(t) == 2
        t.remove("a")
        opened(t, "c")
        assert len(t) == 2

    def test_opening_session_counts_against_the_limit(self) -> None:
        t = table(max_sessions=1)
        t.open("a", owner="", tenant_id=None, value="a", now=0)  # initialize still running
        with pytest.raises(ProtocolError):
            t.open("b", owner="", tenant_id=None, value="b", now=0)

    def test_id_collision_is_a_bug(self) -> None:
        t = table()
        opened(t, "a")
        with pytest.raises(RuntimeError):
            t.open("a", owner="", tenant_id=None, value="a", now=0)

    def test_per_tenant_counts(self) -> None:
        t = table()
        opened(t, "a", tenant="t1")
        opened(t, "b", tenant="t1")
        opened(t, "c", tenant=None)
        assert (t.count_for("t1"), t.count_for(None), t.count_for("t2")) == (2, 1, 0)
        t.remove("a")
        t.remove("b")
        assert t.per_tenant() == {None: 1}

    @pytest.mark.parametrize(("max_sessions", "timeout"), [(0, 1.0), (1, 0.0), (1, -1.0)])
    def test_bad_configuration(self, max_sessions: int, timeout: float) -> None:
        with pytest.raises(ValueError, match="must be"):
            SessionTable(max_sessions=max_sessions, idle_timeout=timeout)


class TestLookup:
    def test_owner_mismatch_is_none(self) -> None:
        t = table()
        entry = opened(t, "a", owner="alice")
        assert t.lookup("a", "alice") is entry
        assert t.lookup("a", "bob") is None
        assert t.lookup("a", "") is None
        assert t.lookup("zzz", "alice") is None

    def test_opening_session_is_not_addressable(self) -> None:
        t = table()
        entry = t.open("a", owner="", tenant_id=None, value="a", now=0)
        assert entry.state is SessionState.OPENING
        assert t.lookup("a", "") is None
        assert t.get("a") is entry
        t.activate(entry)
        assert t.lookup("a", "") is entry

    def test_removed_session_is_not_found_and_closed(self) -> None:
        t = table()
        entry = opened(t, "a")
        assert t.remove("a") is entry
        assert entry.state is SessionState.CLOSED
        assert t.lookup("a", "") is None

    def test_remove_is_idempotent(self) -> None:
        t = table()
        opened(t, "a", tenant="t")
        assert t.remove("a") is not None
        assert t.remove("a") is None
        assert t.remove("never") is None
        assert len(t) == 0
        assert t.per_tenant() == {}


class TestIdleExpiry:
    def test_expires_exactly_at_deadline(self) -> None:
        t = table()
        entry = opened(t, "a", now=5.0)
        assert t.next_deadline() == 5.0 + TIMEOUT
        assert t.expired(5.0 + TIMEOUT - 0.001) == []
        assert t.expired(5.0 + TIMEOUT) == [entry]
        # Reported once: the shell removes it; the table does not by itself.
        assert t.expired(100.0) == []
        assert t.get("a") is entry

    def test_busy_session_never_expires(self) -> None:
        t = table()
        entry = opened(t, "a", now=0.0)
        t.begin(entry)  # e.g. an open GET stream, or a long tool call
        assert t.expired(1_000_000.0) == []
        t.end(entry, 1_000_000.0)
        assert t.expired(1_000_000.0 + TIMEOUT - 1) == []
        assert t.expired(1_000_000.0 + TIMEOUT) == [entry]

    def test_activity_pushes_the_deadline_back(self) -> None:
        t = table()
        entry = opened(t, "a", now=0.0)
        t.begin(entry)
        t.end(entry, 8.0)  # idle again from 8, but the heap still holds the deadline from 0
        assert t.expired(TIMEOUT) == []  # stale item popped and re-queued with the true deadline
        assert t.next_deadline() == 8.0 + TIMEOUT
        assert t.expired(8.0 + TIMEOUT) == [entry]

    def test_concurrent_exchanges_idle_only_when_the_last_ends(self) -> None:
        t = table()
        entry = opened(t, "a", now=0.0)
        t.begin(entry)
        t.begin(entry)
        t.end(entry, 1.0)
        assert entry.idle_since is None
        t.end(entry, 2.0)
        assert entry.idle_since == 2.0

    def test_only_due_sessions_expire(self) -> None:
        t = table()
        a = opened(t, "a", now=0.0)
        opened(t, "b", now=5.0)
        assert t.expired(TIMEOUT + 1) == [a]

    def test_removed_session_never_expires(self) -> None:
        t = table()
        opened(t, "a", now=0.0)
        t.remove("a")
        assert t.expired(1e9) == []

    def test_no_timeout_never_queues(self) -> None:
        t = table(idle_timeout=None)
        opened(t, "a", now=0.0)
        assert t.next_deadline() is None
        assert t.expired(1e12) == []


class TestHeapBounds:
    def test_heap_never_grows_with_request_rate(self) -> None:
        t = table()
        entry = opened(t, "a", now=0.0)
        for step in range(10_000):
            now = step * 0.001
            t.begin(entry)
            t.end(entry, now)
            assert heap_size(t) <= 1
        assert t.expired(10.0 + TIMEOUT) == [entry]

    def test_many_sessions_one_item_each(self) -> None:
        t = table(max_sessions=1000)
        entries = [opened(t, f"s{i}", now=0.0) for i in range(500)]
        for round_ in range(20):
            for entry in entries:
                t.begin(entry)
                t.end(entry, float(round_))
        assert heap_size(t) <= len(entries)

    def test_churn_does_not_grow_the_heap(self) -> None:
        """initialize, DELETE, repeat: removed sessions' items are compacted away."""
        t = table()
        keep = opened(t, "keep", now=0.0)
        for i in range(10_000):
            opened(t, f"s{i}", now=0.0)
            t.remove(f"s{i}")
            assert heap_size(t) <= 2 * len(t) + 65
        assert t.expired(TIMEOUT) == [keep]
