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
from dataclasses import dataclass
from typing import Generic, TypeVar

from .errors import SERVER_BUSY, ProtocolError, TooManyRequests
from .states import ADDRESSABLE, SessionInput, SessionState, next_state

__all__: list[str] = []

T = TypeVar("T")

# Seconds a client over its tenant's session cap is told to wait: a session frees up at any time.
SESSION_CAP_RETRY_AFTER = 1


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
    # A draining session of a removed tenant ends as soon as nothing is in flight.
    end_when_idle: bool = False

    def apply(self, event: SessionInput) -> SessionState:
        self.state = next_state(self.state, event)
        return self.state


class SessionTable(Generic[T]):
    """Sessions by id, with a hard limit and idle expiry."""

    def __init__(self, *, max_sessions: int, idle_timeout: float | None, max_per_tenant: int | None = None) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        if max_per_tenant is not None and max_per_tenant < 1:
            raise ValueError("max_sessions_per_tenant must be at least 1 (or None)")
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError("session idle timeout must be positive (or None to disable)")
        self.max_sessions = max_sessions
        self.max_per_tenant = max_per_tenant
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
        """Admit a session in OPENING state; raise 503 when the table is full, 429 when the tenant
        holds its share (`max_per_tenant`, so one tenant cannot take every session).

        The opening session counts against the limits at once, so concurrent initializes cannot
        overshoot them.
        """
        if len(self._entries) >= self.max_sessions:
            raise ProtocolError(
                503, "Too many open sessions", code=SERVER_BUSY, reason=f"session limit {self.max_sessions} reached"
            )
        if (
            self.max_per_tenant is not None
            and tenant_id is not None
            and self._per_tenant.get(tenant_id, 0) >= self.max_per_tenant
        ):
            # A session frees up when the client deletes one or the reaper ends an idle one.
            raise TooManyRequests(SESSION_CAP_RETRY_AFTER, limit="sessions per tenant")
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

    def end(self, entry: SessionEntry[T], now: float) -> bool:
        """An exchange finished; the idle clock starts when the last one does.

        Returns True when the session should end now: it is draining for a removed tenant and
        nothing is in flight any more.
        """
        entry.in_flight -= 1
        if entry.in_flight == 0 and entry.session_id in self._entries:
            entry.idle_since = now
            if entry.end_when_idle:
                return True
            if self.idle_timeout is not None:
                self._queue(entry, now + self.idle_timeout)
        return False

    def drain(self, entry: SessionEntry[T], deadline: float, *, end_when_idle: bool) -> bool:
        """Mark a session draining until `deadline`; True when it should end at once (already idle)."""
        entry.apply(SessionInput.DRAIN)
        entry.drain_deadline = deadline if entry.drain_deadline is None else min(deadline, entry.drain_deadline)
        entry.end_when_idle = entry.end_when_idle or end_when_idle
        if entry.end_when_idle and entry.in_flight == 0:
            return True
        self._queue(entry, entry.drain_deadline)
        return False

    def _queue(self, entry: SessionEntry[T], deadline: float) -> None:
        # One item per session, unless a drain deadline comes before the queued one.
        if entry.queued_deadline is not None and entry.queued_deadline <= deadline:
            return
        entry.queued_deadline = deadline
        heapq.heappush(self._deadlines, (deadline, entry.session_id))

    def next_deadline(self) -> float | None:
        """The earliest moment a session may expire (possibly stale: `expired` skips those)."""
        return self._deadlines[0][0] if self._deadlines else None

    def expired(self, now: float) -> list[SessionEntry[T]]:
        """Sessions whose idle deadline has passed, taken off the deadline heap (not out of the table)."""
        due: list[SessionEntry[T]] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            queued, session_id = heapq.heappop(self._deadlines)
            entry = self._entries.get(session_id)
            if entry is None or entry.queued_deadline != queued:
                # Gone, or superseded: an earlier drain deadline was queued over this item, and
                # that item (popped before this one) already handled the session.
                continue
            entry.queued_deadline = None
            deadline = self._deadline_of(entry)
            if deadline is None:
                continue  # busy again: `end` queues it when it next goes idle
            if deadline <= now:
                due.append(entry)
            else:
                self._queue(entry, deadline)
        return due

    def _deadline_of(self, entry: SessionEntry[T]) -> float | None:
        """When a session expires: the drain deadline (busy or not), or the end of its idle time."""
        idle = None
        if entry.in_flight == 0 and entry.idle_since is not None and self.idle_timeout is not None:
            idle = entry.idle_since + self.idle_timeout
        if entry.drain_deadline is None:
            return idle
        return entry.drain_deadline if idle is None else min(idle, entry.drain_deadline)

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
