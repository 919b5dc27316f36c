"""How far a mirrored registry may be trusted while its shared store (Redis) is out of reach.

    CURRENT --lost--> LOCAL_COPY --expired--> FAILING_CLOSED
       ^                  |                        |
       +---- resynced ----+-------- resynced ------+

A mirror that loses its store keeps serving tenant lookups from its local copy (LOCAL_COPY) for
`stale_for` seconds (None: for ever); past that, lookups fail closed: `StoreUnavailable`, a 503 with
`Retry-After` (not a 401: the token may well be valid). A resynchronisation once the store answers
again makes the copy CURRENT. Each change of state is logged once, with no token. The registry reads
`degraded` on every lookup: one attribute while the store is reachable.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from typing import Final

from .._core.errors import StoreUnavailable
from .._core.states import TransitionTable

__all__ = ["DEFAULT_STALE_FOR", "Freshness", "LocalCopy"]

logger = logging.getLogger("asgi_mcp.tenants")

# Long enough to ride out a Redis restart or failover; short enough that a token removed meanwhile
# (which this worker cannot hear of) stops working within a minute.
DEFAULT_STALE_FOR: Final = 60.0


class Freshness(enum.Enum):
    CURRENT = "current"
    LOCAL_COPY = "serving from the local copy"
    FAILING_CLOSED = "failing closed"


class StoreEvent(enum.Enum):
    LOST = "lost"
    EXPIRED = "expired"
    RESYNCED = "resynced"


TRANSITIONS: Final = TransitionTable[Freshness, StoreEvent, Freshness](
    "the tenant registry's local copy",
    {
        (Freshness.CURRENT, StoreEvent.LOST): Freshness.LOCAL_COPY,
        (Freshness.CURRENT, StoreEvent.RESYNCED): Freshness.CURRENT,
        (Freshness.LOCAL_COPY, StoreEvent.LOST): Freshness.LOCAL_COPY,
        (Freshness.LOCAL_COPY, StoreEvent.EXPIRED): Freshness.FAILING_CLOSED,
        (Freshness.LOCAL_COPY, StoreEvent.RESYNCED): Freshness.CURRENT,
        (Freshness.FAILING_CLOSED, StoreEvent.LOST): Freshness.FAILING_CLOSED,
        (Freshness.FAILING_CLOSED, StoreEvent.RESYNCED): Freshness.CURRENT,
    },
)


class LocalCopy:
    """The freshness of one registry's copy of its store. `clock`: the registry's wall clock."""

    def __init__(self, stale_for: float | None, clock: Callable[[], float]) -> None:
        if stale_for is not None and not stale_for >= 0:
            raise ValueError("stale_for must be a number of seconds (0 or more), or None")
        self.stale_for = stale_for
        self.state = Freshness.CURRENT
        self.degraded = False  # not CURRENT: what a lookup reads
        self.since = 0.0  # when the store was lost
        self._clock = clock

    def lost(self) -> None:
        """The mirror could not reach its store (or lost its feed)."""
        if self.state is Freshness.CURRENT:
            self.since = self._clock()
            forever = self.stale_for is None
            logger.warning(
                "tenant store unreachable: serving tenant lookups from the local copy %s",
                "until it is back" if forever else f"for {self.stale_for:g} s, then failing closed (503)",
            )
        self._move(StoreEvent.LOST)

    def resynced(self) -> None:
        """The mirror brought the copy to the store's snapshot."""
        if self.state is not Freshness.CURRENT:
            logger.warning("tenant store reachable again: local copy resynchronised (was %s)", self.state.value)
        self._move(StoreEvent.RESYNCED)

    def check(self) -> None:
        """Before a lookup while degraded: `StoreUnavailable` once the copy is older than `stale_for`."""
        if self.state is Freshness.LOCAL_COPY:
            if self.stale_for is None or self._clock() - self.since < self.stale_for:
                return
            logger.warning(
                "tenant store unreachable for over %g s: tenant lookups fail closed (503) until it is back",
                self.stale_for,
            )
            self._move(StoreEvent.EXPIRED)
        if self.state is Freshness.FAILING_CLOSED:
            raise StoreUnavailable("tenant store")

    def _move(self, event: StoreEvent) -> None:
        self.state = TRANSITIONS[(self.state, event)]
        self.degraded = self.state is not Freshness.CURRENT
