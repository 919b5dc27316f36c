"""What the workers of one fleet share, as one object: the session directory, the message bus and,
optionally, the event store, the roster of workers alive, the rate-limit buckets and the per-tenant
session slots. `McpApp(fleet=...)` takes it; `McpApp(redis_url=...)` builds the Redis one
(`asgi_mcp._stores.fleet_from_url`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

from mcp.server.streamable_http import EventStore

from .._core.errors import ConfigurationError
from .fleet_roster import FleetRoster
from .message_bus import MessageBus
from .rate_limits import RateLimitStore
from .session_directory import SessionDirectory
from .session_slots import SessionSlots

__all__ = ["DEFAULT_HEARTBEAT", "FleetStores"]

# Seconds between a worker's beats in the roster; it counts as alive for `MISSED_BEATS` of them.
DEFAULT_HEARTBEAT: Final = 5.0
MISSED_BEATS: Final = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetStores:
    """The stores the workers of one fleet share.

    Args:
        directory: where each legacy session's record lives, so any worker can adopt it.
        bus: how workers reach each other's sessions (DELETE, a GET stream's messages, answers to
            server-to-client requests).
        event_store: the events `Last-Event-ID` replays; shared too, or a replay works only on the
            worker that wrote them. None: the app's `event_store` (or none).
        rate_limits: the token buckets of `RateLimits`, unless the app's `RateLimits` names a store
            of its own. None: each worker's own (a limit then holds per worker).
        session_slots: what `max_sessions_per_tenant` counts across the fleet. None: the cap holds
            per worker.
        secret: keys the owner digests the directory keeps (HMAC-SHA256), so a copy of the directory
            cannot be checked against guessed tokens; None: a plain SHA-256 of the owner key.
        roster: where each worker beats with its id, start and sessions per tenant, for
            `McpApp.fleet_stats()` and `asgi-mcp fleet`. None: each worker knows only itself.
        heartbeat: seconds between a worker's beats; it counts as alive until it misses three
            (a killed worker ages out within `3 * heartbeat` seconds; a stopped one leaves at once).
    """

    directory: SessionDirectory
    bus: MessageBus
    event_store: EventStore | None = None
    rate_limits: RateLimitStore | None = None
    session_slots: SessionSlots | None = None
    secret: bytes | None = None
    roster: FleetRoster | None = None
    heartbeat: float = DEFAULT_HEARTBEAT
    # The URL `fleet_from_url` built them from (never shown: it may carry a password).
    url: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.heartbeat > 0 or math.isinf(self.heartbeat):
            raise ConfigurationError("heartbeat must be a positive number of seconds")

    @property
    def liveness_ttl(self) -> float:
        """How long a worker counts as alive after its last beat."""
        return MISSED_BEATS * self.heartbeat
