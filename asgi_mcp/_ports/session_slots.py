"""Session slots: the per-tenant session cap (`max_sessions_per_tenant`) counted across a fleet.

Each live legacy session of a capped tenant holds a slot: reserved at `initialize` (atomically: the
count is checked and the slot taken in one step, so two workers cannot both take the last one),
released when the session ends for its client, and renewed while it is used. A slot not renewed for
`ttl` seconds lapses, so the sessions of a worker that died without ending them free their slots.

A port of its own rather than part of the session directory: the cap is decided before the SDK runs
`initialize` (the directory's record is written after it, with what was negotiated), and a count of
live slots wants a structure ordered by expiry (a Redis sorted set), which the directory does not need.
`now` is the caller's wall clock (`time.time`), as for the directory's `touch`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = ["InMemorySessionSlots", "SessionSlots"]


class SessionSlots(Protocol):
    """Where the slots of capped tenants' sessions live. Implementations: `InMemorySessionSlots`;
    `RedisSessionSlots` for fleets. Each has its slots' `ttl`."""

    async def reserve(self, tenant_id: str, session_id: str, cap: int, now: float) -> bool:
        """Take a slot for the session if the tenant holds fewer than `cap` live ones (True), else
        nothing changes (False). A session that holds a slot already keeps it (True), renewed."""
        ...

    async def renew(self, tenant_id: str, session_ids: Sequence[str], now: float) -> None:
        """Move the lapse of these sessions' slots to `now + ttl`; a session without a slot gets none."""
        ...

    async def release(self, tenant_id: str, session_id: str) -> None:
        """Free the session's slot. Idempotent."""
        ...

    async def count(self, tenant_id: str, now: float) -> int:
        """The tenant's live slots at `now`."""
        ...


class InMemorySessionSlots:
    """Process-local slots: what one worker (or the workers of one process) share."""

    def __init__(self, *, ttl: float = 3600.0) -> None:
        if ttl <= 0:
            raise ValueError("session slots' ttl must be positive")
        self.ttl = ttl
        self._lapses: dict[str, dict[str, float]] = {}  # tenant id -> session id -> when its slot lapses

    async def reserve(self, tenant_id: str, session_id: str, cap: int, now: float) -> bool:
        slots = self._live(tenant_id, now)
        if session_id not in slots and len(slots) >= cap:
            return False
        slots[session_id] = now + self.ttl
        self._lapses[tenant_id] = slots
        return True

    async def renew(self, tenant_id: str, session_ids: Sequence[str], now: float) -> None:
        slots = self._lapses.get(tenant_id, {})
        for session_id in session_ids:
            if session_id in slots:
                slots[session_id] = max(slots[session_id], now + self.ttl)

    async def release(self, tenant_id: str, session_id: str) -> None:
        slots = self._lapses.get(tenant_id)
        if slots is not None:
            slots.pop(session_id, None)
            if not slots:
                del self._lapses[tenant_id]

    async def count(self, tenant_id: str, now: float) -> int:
        return len(self._live(tenant_id, now))

    def _live(self, tenant_id: str, now: float) -> dict[str, float]:
        slots = self._lapses.get(tenant_id, {})
        return {session_id: lapse for session_id, lapse in slots.items() if lapse > now}

    def __repr__(self) -> str:
        return f"InMemorySessionSlots({len(self._lapses)} tenants)"
