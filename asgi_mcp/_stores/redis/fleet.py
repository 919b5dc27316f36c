"""The Redis fleet: one URL, the shared stores (`FleetStores`)."""

from __future__ import annotations

from ..._ports.fleet import DEFAULT_HEARTBEAT, FleetStores
from .event_store import RedisEventStore
from .fleet_roster import RedisFleetRoster
from .message_bus import RedisMessageBus
from .rate_limits import RedisRateLimitStore
from .session_directory import RedisSessionDirectory
from .session_slots import RedisSessionSlots
from .tenant_store import RedisTenantStore

__all__ = ["RedisFleetRoster", "RedisTenantStore", "redis_fleet"]


def redis_fleet(
    url: str, *, prefix: str, session_ttl: float, secret: bytes | None, heartbeat: float = DEFAULT_HEARTBEAT
) -> FleetStores:
    """Session directory, message bus, event store, roster, rate limits and session slots on the Redis
    at `url`, keyed under `prefix`.

    `session_ttl` is how long a session record, its slot (and a stream's events) outlive their last activity.
    """
    return FleetStores(
        directory=RedisSessionDirectory(url, prefix=prefix, ttl=session_ttl),
        bus=RedisMessageBus(url, prefix=prefix),
        event_store=RedisEventStore(url, prefix=prefix, ttl=2 * session_ttl),
        rate_limits=RedisRateLimitStore(url, prefix=prefix),
        session_slots=RedisSessionSlots(url, prefix=prefix, ttl=session_ttl),
        secret=secret,
        roster=RedisFleetRoster(url, prefix=prefix),
        heartbeat=heartbeat,
        url=url,
    )
