"""The session table: admission, lookup by id and owner, in-flight accounting and idle expiry.

Sans-IO: time is passed in as `now`, nothing awaits. The shell holds one `SessionTable` per app and
removes sessions only through `SessionTable.remove`, whatever the cause (DELETE, idle expiry,
tenant removal, shutdown, a crashed server task).

Idle time counts from the end of the last in-flight exchange (a POST being answered or an open GET
stream), so a long tool call or a listening client never expires under its own feet. Deadlines sit
in a lazy heap holding at most one item per session: a popped item whose session became busy or was
idle again later is dropped or pushed back with the true deadline, so the heap never grows with the
request rate and no operation rescans the table.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ._errors import SERVER_BUSY, ProtocolError
from ._state import ADDRESSABLE, SessionInput, SessionState, next_state

__all__: list[str] = []

T = TypeVar("T")


@dataclass(eq=False, slots=True)
class SessionEntry(Generic[T]):
    """Bookkeeping for one session; `value` is the shell's session object."""

    session_id: str
    owner: str
    tenant_id: str | None
    value: T
    created_at: float
    state: SessionState = SessionState.OPENING
    in_flight: int = 0
    idle_since: float | None = None
    # Deadline of this session's item in the heap, if it has one (at most one at a time).
    queued_deadline: float | None = None
    drain_deadline: float | None = None
    streams: int = field(default=0)

    def apply(self, event: SessionInput) -> SessionState:
        self.state = next_state(self.state, event)
        return self.state


class SessionTable(Generic[T]):
    """Sessions by id, with a hard limit and idle expiry."""

    def __init__(self, *, max_sessions: int, idle_timeout: float | None) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError("session idle timeout must be positive (or None to disable)")
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self._entries: dict[str, SessionEntry[T]] = {}
        self._deadlines: list[tuple[float, str]] = []
        self._per_tenant: dict[str | None, int] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[SessionEntry[T]]:
        return iter(list(self._entries.values()))

    def count_for(self, tenant_id: str | None) -> int:
        return self._per_tenant.get(tenant_id, 0)

    def per_tenant(self) -> dict[str | None, int]:
        return dict(self._per_tenant)

    def open(self, session_id: str, *, owner: str, tenant_id: str | None, value: T, now: float) -> SessionEntry[T]:
        """Admit a session in OPENING state, or raise 503 when the table is full.

        The opening session counts against the limit at once, so concurrent initializes cannot
        overshoot it.
        """
        if len(self._entries) >= self.max_sessions:
            raise ProtocolError(
                503, "Too many open sessions", code=SERVER_BUSY, reason=f"session limit {self.max_sessions} reached"
            )
        if session_id in self._entries:
            raise RuntimeError("session id collision")  # 192 random bits: not reachable in practice
        entry = SessionEntry(session_id, owner, tenant_id, value, created_at=now, in_flight=1)
        self._entries[session_id] = entry
        self._per_tenant[tenant_id] = self._per_tenant.get(tenant_id, 0) + 1
        return entry

    def activate(self, entry: SessionEntry[T]) -> None:
        entry.apply(SessionInput.INITIALIZED)

    def lookup(self, session_id: str, owner: str) -> SessionEntry[T] | None:
        """The addressable session with this id, if the caller is its owner; None otherwise."""
        entry = self._entries.get(session_id)
        if entry is None or entry.owner != owner or entry.state not in ADDRESSABLE:
            return None
        return entry

    def get(self, session_id: str) -> SessionEntry[T] | None:
        return self._entries.get(session_id)

    def begin(self, entry: SessionEntry[T]) -> None:
        """An exchange (POST answer or GET stream) started on the session."""
        entry.in_flight += 1
        entry.idle_since = None

    def end(self, entry: SessionEntry[T], now: float) -> None:
        """An exchange finished; the idle clock starts when the last one does."""
        entry.in_flight -= 1
        if entry.in_flight == 0 and entry.session_id in self._entries:
            entry.idle_since = now
            if self.idle_timeout is not None and entry.queued_deadline is None:
                self._queue(entry, now + self.idle_timeout)

    def _queue(self, entry: SessionEntry[T], deadline: float) -> None:
        entry.queued_deadline = deadline
        heapq.heappush(self._deadlines, (deadline, entry.session_id))

    def next_deadline(self) -> float | None:
        """The earliest moment a session may expire (possibly stale: `expired` skips those)."""
        return self._deadlines[0][0] if self._deadlines else None

    def expired(self, now: float) -> list[SessionEntry[T]]:
        """Sessions whose idle deadline has passed, taken off the deadline heap (not out of the table)."""
        due: list[SessionEntry[T]] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, session_id = heapq.heappop(self._deadlines)
            entry = self._entries.get(session_id)
            if entry is None:
                continue
            entry.queued_deadline = None
            if entry.in_flight or entry.idle_since is None or self.idle_timeout is None:
                continue  # busy again: `end` queues it when it next goes idle
            deadline = entry.idle_since + self.idle_timeout
            if deadline <= now:
                due.append(entry)
            else:
                self._queue(entry, deadline)
        return due

    def remove(self, session_id: str) -> SessionEntry[T] | None:
        """The one place a session leaves the table. Idempotent: a second call returns None."""
        entry = self._entries.pop(session_id, None)
        if entry is None:
            return None
        entry.apply(SessionInput.CLOSE)
        remaining = self._per_tenant[entry.tenant_id] - 1
        if remaining:
            self._per_tenant[entry.tenant_id] = remaining
        else:
            del self._per_tenant[entry.tenant_id]
        # Its heap item (if any) is skipped when popped; rebuild once removed sessions' items dominate,
        # so churn (initialize, DELETE, repeat) cannot grow the heap for a whole idle timeout.
        if len(self._deadlines) > 2 * len(self._entries) + 64:
            self._deadlines = [
                (e.queued_deadline, e.session_id) for e in self._entries.values() if e.queued_deadline is not None
            ]
            heapq.heapify(self._deadlines)
        return entry
