"""Stores: implementations of the ports (`asgi_mcp._ports`) that keep state outside this process.

Each backend is a subpackage that alone imports its client library (an optional extra), so the
package imports without it: `redis` needs `asgi-mcp[redis]` (coredis).
"""

from __future__ import annotations

import importlib
from typing import Any, Final
from urllib.parse import urlsplit

from .._core.errors import ConfigurationError
from .._ports.fleet import DEFAULT_HEARTBEAT, FleetStores
from .._ports.fleet_roster import FleetRoster
from .._ports.tenant_store import TenantStore

__all__ = ["fleet_from_url", "roster_from_url", "tenant_store_from_url"]

_REDIS_SCHEMES: Final = frozenset({"redis", "rediss", "unix"})


def fleet_from_url(
    url: str,
    *,
    prefix: str = "asgi_mcp",
    session_ttl: float = 3600.0,
    secret: bytes | None = None,
    heartbeat: float = DEFAULT_HEARTBEAT,
) -> FleetStores:
    """The shared stores of a fleet from a URL (`redis://`, `rediss://`, `unix://`: Redis 7+ / Valkey 8+).
    `heartbeat`: seconds between each worker's beats in the fleet's roster (`FleetStores.heartbeat`).

    The backend is imported here, by name, only when asked for: importing `asgi_mcp` never loads an
    optional client library, and no layer above this one imports it.
    """
    backend = _redis_backend(url)
    fleet: FleetStores = backend.redis_fleet(
        url, prefix=prefix, session_ttl=session_ttl, secret=secret, heartbeat=heartbeat
    )
    return fleet


def tenant_store_from_url(url: str, *, secret: bytes, prefix: str = "asgi_mcp") -> TenantStore:
    """The shared tenant store at a Redis URL (`RedisTenantStore`): tokens as HMAC-SHA256 under `secret`
    (32 bytes or more, the same on every worker), for `Tenants(store=...)` and `asgi-mcp tokens`."""
    store: TenantStore = _redis_backend(url).RedisTenantStore(url, secret=secret, prefix=prefix)
    return store


def roster_from_url(url: str, *, prefix: str = "asgi_mcp") -> FleetRoster:
    """The roster of a fleet's workers at a Redis URL (`RedisFleetRoster`), for `asgi-mcp fleet`."""
    roster: FleetRoster = _redis_backend(url).RedisFleetRoster(url, prefix=prefix)
    return roster


def _redis_backend(url: str) -> Any:
    if urlsplit(url).scheme not in _REDIS_SCHEMES:
        raise ConfigurationError("the Redis URL must be a redis://, rediss:// or unix:// URL")
    try:
        return importlib.import_module(".redis.fleet", __name__)
    except ModuleNotFoundError as missing:
        raise ConfigurationError("Redis needs the `redis` extra: pip install 'asgi-mcp[redis]'") from missing
