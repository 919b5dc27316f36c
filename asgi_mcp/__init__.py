"""asgi_mcp: a pure-ASGI MCP Streamable HTTP server transport on anyio (asyncio and Trio)."""

import logging as _logging
import types as _types
from typing import TYPE_CHECKING as _TYPE_CHECKING

from ._app.app import McpApp as McpApp
from ._app.config import AppConfig as AppConfig
from ._auth.bearer import AuthenticationError as AuthenticationError
from ._auth.bearer import TokenVerifier as TokenVerifier
from ._auth.introspection import IntrospectionVerifier as IntrospectionVerifier
from ._auth.jwt import JWTVerifier as JWTVerifier
from ._auth.static import StaticTokenVerifier as StaticTokenVerifier
from ._core.asgi import HttpRequest as HttpRequest
from ._core.errors import AsgiMcpError as AsgiMcpError
from ._core.errors import ConfigurationError as ConfigurationError
from ._core.errors import ProtocolError as ProtocolError
from ._core.errors import SecurityRefusal as SecurityRefusal
from ._core.errors import StoreUnavailable as StoreUnavailable
from ._core.errors import SubscriptionCut as SubscriptionCut
from ._core.errors import TenantConflict as TenantConflict
from ._core.errors import TooManyRequests as TooManyRequests
from ._core.http import Headers as Headers
from ._core.token_bucket import Rate as Rate
from ._ops.audit import AuditPolicy as AuditPolicy
from ._ops.lifecycle import Audit as Audit
from ._ops.lifecycle import Event as Event
from ._ops.lifecycle import EventName as EventName
from ._ops.lifecycle import ServerRegistered as ServerRegistered
from ._ops.lifecycle import ServerRemoved as ServerRemoved
from ._ops.lifecycle import ServerUpdated as ServerUpdated
from ._ops.lifecycle import SessionCreated as SessionCreated
from ._ops.lifecycle import SessionEnded as SessionEnded
from ._ops.lifecycle import Started as Started
from ._ops.lifecycle import Stopped as Stopped
from ._ops.lifecycle import TokenAdded as TokenAdded
from ._ops.lifecycle import TokenExpired as TokenExpired
from ._ops.lifecycle import TokenRemoved as TokenRemoved
from ._ops.lifecycle import TokenRotated as TokenRotated
from ._ops.lifecycle import TokenUpdated as TokenUpdated
from ._ops.lifecycle import ToolCalled as ToolCalled
from ._ops.lifecycle import TransportError as TransportError
from ._ports.fleet import FleetStores as FleetStores
from ._ports.fleet_roster import FleetRoster as FleetRoster
from ._ports.fleet_roster import InMemoryFleetRoster as InMemoryFleetRoster
from ._ports.fleet_roster import WorkerRecord as WorkerRecord
from ._ports.message_bus import BusMessage as BusMessage
from ._ports.message_bus import InMemoryMessageBus as InMemoryMessageBus
from ._ports.message_bus import MessageBus as MessageBus
from ._ports.rate_limits import InMemoryRateLimitStore as InMemoryRateLimitStore
from ._ports.rate_limits import RateLimitStore as RateLimitStore
from ._ports.replay import InMemoryEventStore as InMemoryEventStore
from ._ports.session_directory import InMemorySessionDirectory as InMemorySessionDirectory
from ._ports.session_directory import SessionDirectory as SessionDirectory
from ._ports.session_directory import SessionRecord as SessionRecord
from ._ports.session_slots import InMemorySessionSlots as InMemorySessionSlots
from ._ports.session_slots import SessionSlots as SessionSlots
from ._ports.tenant_store import Credential as Credential
from ._ports.tenant_store import InMemoryTenantStore as InMemoryTenantStore
from ._ports.tenant_store import TenantChange as TenantChange
from ._ports.tenant_store import TenantRecord as TenantRecord
from ._ports.tenant_store import TenantSnapshot as TenantSnapshot
from ._ports.tenant_store import TenantStore as TenantStore
from ._serving.one_call import PerBearerServer as PerBearerServer
from ._serving.one_call import create_per_bearer_server as create_per_bearer_server
from ._serving.runs import ServerInfo as ServerInfo
from ._stores import fleet_from_url as fleet_from_url
from ._stores import tenant_store_from_url as tenant_store_from_url
from ._tenancy.limits import RateLimits as RateLimits
from ._tenancy.limits import TenantLimits as TenantLimits
from ._tenancy.tenant import RegistryObserver as RegistryObserver
from ._tenancy.tenant import Tenant as Tenant
from ._tenancy.tenants import ServerFactory as ServerFactory
from ._tenancy.tenants import SessionPolicy as SessionPolicy
from ._tenancy.tenants import Tenants as Tenants

__all__ = [
    "AppConfig",
    "AsgiMcpError",
    "FleetStores",
    "FleetRoster",
    "InMemoryFleetRoster",
    "Audit",
    "AuditPolicy",
    "AuthenticationError",
    "BusMessage",
    "ConfigurationError",
    "Credential",
    "Event",
    "EventName",
    "Headers",
    "HttpRequest",
    "InMemoryEventStore",
    "InMemoryMessageBus",
    "InMemorySessionDirectory",
    "InMemorySessionSlots",
    "InMemoryTenantStore",
    "InMemoryRateLimitStore",
    "IntrospectionVerifier",
    "JWTVerifier",
    "McpApp",
    "MessageBus",
    "PerBearerServer",
    "ProtocolError",
    "Rate",
    "RateLimitStore",
    "RateLimits",
    "SecurityRefusal",
    "StoreUnavailable",
    "ServerInfo",
    "RegistryObserver",
    "ServerFactory",
    "ServerRegistered",
    "ServerRemoved",
    "ServerUpdated",
    "SessionCreated",
    "SessionDirectory",
    "SessionEnded",
    "SessionPolicy",
    "SessionRecord",
    "SessionSlots",
    "StaticTokenVerifier",
    "Started",
    "Stopped",
    "SubscriptionCut",
    "TenantChange",
    "TenantConflict",
    "TenantRecord",
    "TenantLimits",
    "TenantSnapshot",
    "TenantStore",
    "Tenant",
    "Tenants",
    "TokenAdded",
    "TokenExpired",
    "TokenRemoved",
    "TokenRotated",
    "TokenUpdated",
    "TokenVerifier",
    "WorkerRecord",
    "TooManyRequests",
    "ToolCalled",
    "TransportError",
    "create_per_bearer_server",
    "fleet_from_url",
    "tenant_store_from_url",
]

__version__ = "0.1.0"

# Reprs and docs name the public path (asgi_mcp.McpApp), not the private module.
# (Type aliases keep theirs: on Python 3.10 a generic alias passes `isinstance(x, type)` but its
# `__module__` is read-only.)
for _public in __all__:
    _obj: object = globals()[_public]
    if isinstance(_obj, _types.GenericAlias):
        continue
    if isinstance(_obj, (type, _types.FunctionType)):
        _obj.__module__ = __name__

if _TYPE_CHECKING:
    from ._stores.redis import RedisEventStore as RedisEventStore


def __getattr__(name: str) -> object:
    # Stores whose client library is an optional extra load on first use, so `import asgi_mcp` (and
    # `from asgi_mcp import *`: they are not in __all__) never needs it.
    if name == "RedisEventStore":
        try:
            from ._stores.redis import RedisEventStore
        except ModuleNotFoundError as missing:
            raise ImportError(f"asgi_mcp.{name} needs the `redis` extra: pip install 'asgi-mcp[redis]'") from missing
        RedisEventStore.__module__ = __name__
        globals()[name] = RedisEventStore
        return RedisEventStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# A library never configures logging; this keeps "no handler" warnings away until the app does.
_logging.getLogger("asgi_mcp").addHandler(_logging.NullHandler())
