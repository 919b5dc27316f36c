"""`AppConfig`: every option `McpApp` takes, validated once, immutable.

`McpApp(...)` builds one from its keyword arguments and exposes it as `app.config`. The runtime, the
side routes and the edge's authentication copy what they need out of it when they are built, so no
request reads an option through the app. Its repr lists every option; objects that can hold tokens
or client data (the token verifier, the tenant registry, the event store) appear by type only, and
URLs without their user-info.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from mcp.server.streamable_http import EventStore

from .._auth.bearer import TokenVerifier
from .._core.errors import ConfigurationError
from .._core.http import normalize_endpoint
from .._kernel.hosting import as_lowlevel_server
from .._ops.audit import AuditPolicy
from .._ports.fleet import FleetStores
from .._stores import fleet_from_url
from .._tenancy.limits import RateLimits
from .._tenancy.tenants import Tenants

__all__ = ["DEFAULT_MAX_BODY", "AppConfig"]

DEFAULT_MAX_BODY: Final = 4 * 1024 * 1024
# Options whose repr could carry a token or a client's data: shown as their type only.
_SHOWN_BY_TYPE: Final = frozenset(
    {"tenants", "token_verifier", "event_store", "rate_limits", "audit", "fleet", "fleet_secret"}
)
# URLs could carry user-info ("https://user:secret@host"): shown without it.
_URL_OPTIONS: Final = frozenset({"resource_server_url", "authorization_servers", "redis_url"})


def _set(config: AppConfig, name: str, value: Any) -> None:
    object.__setattr__(config, name, value)  # normalising a frozen instance while it is built


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class AppConfig:
    """The options of one `McpApp` (see `McpApp` for what each means), checked and normalised.

    Built, every option is in its canonical form: `server` is the low-level `mcp` `Server` served
    (an `MCPServer`'s own), paths have one leading slash and none trailing, sequences are tuples.
    An invalid combination or value raises `ConfigurationError` naming the option; so does a copy
    made with `dataclasses.replace`, which is validated again. Its repr shows every option, except
    that the token verifier, the tenant registry, the event store, the rate limits and the audit
    policy appear by type only and URLs
    lose their user-info: it is safe to log.
    """

    server: Any = None
    tenants: Tenants | None = None
    token_verifier: TokenVerifier | None = None
    required_scopes: Sequence[str] = ()
    resource_server_url: str | None = None
    authorization_servers: Sequence[str] = ()
    validate_resource: bool = False
    path: str = "/mcp"
    json_response: bool = False
    event_store: EventStore | None = None
    retry_interval: int | None = None
    session_idle_timeout: float | None = 1800.0
    max_sessions: int = 10_000
    max_body_size: int = DEFAULT_MAX_BODY
    allowed_hosts: Sequence[str] | None = None
    allowed_origins: Sequence[str] | None = None
    keepalive_interval: float = 15.0
    shutdown_timeout: float = 5.0
    tool_schema_ttl: float = 5.0
    cors_origins: Sequence[str] = ()
    health_path: str | None = None
    ready_path: str | None = None
    gc_freeze: bool = False
    rate_limits: RateLimits | None = None
    max_sessions_per_tenant: int | None = None
    audit: AuditPolicy | None = None
    expose_raw_token: bool = False
    redis_url: str | None = None
    fleet: FleetStores | None = None
    fleet_secret: bytes | None = None

    def __post_init__(self) -> None:
        self._build_fleet()
        self._check_sources()
        self._check_limits()
        if self.server is not None:
            _set(self, "server", as_lowlevel_server(self.server))
        for name in ("required_scopes", "authorization_servers", "cors_origins"):
            _set(self, name, _strings(name, getattr(self, name)))
        for name in ("allowed_hosts", "allowed_origins"):
            value = getattr(self, name)
            if value is not None:
                _set(self, name, _strings(name, value))
        _set(self, "path", normalize_endpoint(self.path))
        self._check_side_paths()

    def _build_fleet(self) -> None:
        """`redis_url`: the Redis fleet (session directory, bus, session slots and, unless the app has
        its own, event store and rate-limit store)."""
        if self.fleet_secret is not None and len(self.fleet_secret) < 16:
            raise ConfigurationError("fleet_secret must be at least 16 bytes")
        if self.redis_url is not None and self.fleet is not None and getattr(self.fleet, "url", None) != self.redis_url:
            raise ConfigurationError("give either redis_url or fleet, not both")
        if self.redis_url is not None and self.fleet is None:
            idle = self.session_idle_timeout
            fleet = fleet_from_url(
                self.redis_url,
                session_ttl=fleet_session_ttl(idle if idle is None or idle > 0 else 1.0),
                secret=self.fleet_secret,
            )
            _set(self, "fleet", fleet)
        if self.fleet is not None and self.event_store is None:
            _set(self, "event_store", self.fleet.event_store)
        # The fleet's buckets, unless the app's limits name a store of their own.
        shared = self.fleet.rate_limits if self.fleet is not None else None
        if shared is not None and self.rate_limits is not None and not self.rate_limits.store_given:
            _set(self, "rate_limits", self.rate_limits.with_store(shared))

    def _check_sources(self) -> None:
        if (self.server is None) == (self.tenants is None):
            raise ConfigurationError("give exactly one of `server` (one MCP server) and `tenants` (one per token)")
        if self.tenants is not None and self.token_verifier is not None:
            raise ConfigurationError("`tenants` authenticates by its own tokens; it takes no `token_verifier`")
        if self.validate_resource and self.resource_server_url is None:
            raise ConfigurationError("validate_resource needs resource_server_url (the audience to check)")

    def _check_limits(self) -> None:
        if self.max_body_size < 1:
            raise ConfigurationError("max_body_size must be positive")
        if self.max_sessions < 1:
            raise ConfigurationError("max_sessions must be at least 1")
        if self.max_sessions_per_tenant is not None and self.max_sessions_per_tenant < 1:
            raise ConfigurationError("max_sessions_per_tenant must be at least 1, or None")
        if self.session_idle_timeout is not None and self.session_idle_timeout <= 0:
            raise ConfigurationError("session_idle_timeout must be positive, or None")
        if self.retry_interval is not None and self.retry_interval < 0:
            raise ConfigurationError("retry_interval must not be negative")
        # A shared store's events must outlive the idle sessions that may resume from them.
        store_ttl = getattr(self.event_store, "ttl", None)
        idle = self.session_idle_timeout
        if isinstance(store_ttl, (int, float)) and idle is not None and store_ttl < 2 * idle:
            raise ConfigurationError("the event store's ttl must be at least twice session_idle_timeout")
        if self.keepalive_interval <= 0:
            raise ConfigurationError("keepalive_interval must be positive")
        if self.shutdown_timeout < 0:
            raise ConfigurationError("shutdown_timeout must not be negative")
        if self.tool_schema_ttl < 0:
            raise ConfigurationError("tool_schema_ttl must not be negative")

    def _check_side_paths(self) -> None:
        health = normalize_endpoint(self.health_path) if self.health_path is not None else None
        ready = normalize_endpoint(self.ready_path) if self.ready_path is not None else None
        _set(self, "health_path", health)
        _set(self, "ready_path", ready)
        # A side route on the endpoint's path would never be answered; two on one path, one of them.
        if self.path in (health, ready) or (health is not None and health == ready):
            raise ConfigurationError("health_path, ready_path and path must be three different paths")

    def __repr__(self) -> str:
        return f"AppConfig({', '.join(f'{f.name}={_shown(f.name, getattr(self, f.name))}' for f in fields(self))})"


def fleet_session_ttl(idle_timeout: float | None) -> float:
    """How long a session record outlives its last activity: its idle time and a margin for the
    heartbeat that renews it (`touch_interval`)."""
    return 1.5 * idle_timeout if idle_timeout is not None else 86_400.0


def touch_interval(idle_timeout: float | None) -> float:
    """How often a worker renews the records of its busy sessions: well inside the margin above."""
    return min(60.0, fleet_session_ttl(idle_timeout) / 8)


def _strings(name: str, value: Sequence[str]) -> tuple[str, ...]:
    # A bare string is a sequence of characters: almost certainly a missing list around one value.
    if isinstance(value, str):
        raise ConfigurationError(f"{name} takes a list of strings, not one string")
    return tuple(value)


def _shown(name: str, value: Any) -> str:
    if value is None:
        return "None"
    if name == "server":
        return f"<{type(value).__name__} {getattr(value, 'name', '?')!r}>"
    if name in _SHOWN_BY_TYPE:
        return f"<{type(value).__name__}>"
    if name in _URL_OPTIONS:
        urls = (value,) if isinstance(value, str) else value
        shown = tuple(_without_userinfo(url) for url in urls)
        return repr(shown[0] if isinstance(value, str) else shown)
    return repr(value)


def _without_userinfo(url: str) -> str:
    try:
        parts = urlsplit(url)
        if "@" not in parts.netloc:
            return url
        return urlunsplit(parts._replace(netloc="<redacted>@" + parts.netloc.rpartition("@")[2]))
    except ValueError:
        return "<unparsable URL>"
