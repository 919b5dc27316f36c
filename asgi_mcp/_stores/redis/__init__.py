"""Redis (7+) and Valkey (8+) stores through coredis (`asgi-mcp[redis]`), on asyncio and Trio.

The only place in asgi_mcp that imports coredis (an import-linter contract keeps it so).
"""

from .connection import RedisConnection as RedisConnection
from .event_store import RedisEventStore as RedisEventStore
from .fleet_roster import RedisFleetRoster as RedisFleetRoster
from .message_bus import RedisMessageBus as RedisMessageBus
from .rate_limits import RedisRateLimitStore as RedisRateLimitStore
from .session_directory import RedisSessionDirectory as RedisSessionDirectory
from .session_slots import RedisSessionSlots as RedisSessionSlots
from .tenant_store import RedisTenantStore as RedisTenantStore

__all__ = [
    "RedisConnection",
    "RedisEventStore",
    "RedisFleetRoster",
    "RedisMessageBus",
    "RedisRateLimitStore",
    "RedisSessionDirectory",
    "RedisSessionSlots",
    "RedisTenantStore",
]
