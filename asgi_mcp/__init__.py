"""asgi_mcp: a pure-ASGI MCP Streamable HTTP server transport on anyio (asyncio and Trio)."""

import logging as _logging
import types as _types

from ._app import McpApp as McpApp
from ._asgi import HttpRequest as HttpRequest
from ._auth import AuthenticationError as AuthenticationError
from ._auth import TokenVerifier as TokenVerifier
from ._errors import AsgiMcpError as AsgiMcpError
from ._errors import ConfigurationError as ConfigurationError
from ._errors import ProtocolError as ProtocolError
from ._errors import SecurityRefusal as SecurityRefusal
from ._event_store import InMemoryEventStore as InMemoryEventStore
from ._events import Event as Event
from ._events import EventName as EventName
from ._events import ServerRegistered as ServerRegistered
from ._events import ServerRemoved as ServerRemoved
from ._events import ServerUpdated as ServerUpdated
from ._events import SessionCreated as SessionCreated
from ._events import SessionEnded as SessionEnded
from ._events import Started as Started
from ._events import Stopped as Stopped
from ._events import TokenAdded as TokenAdded
from ._events import TokenRemoved as TokenRemoved
from ._events import TokenUpdated as TokenUpdated
from ._events import ToolCalled as ToolCalled
from ._events import TransportError as TransportError
from ._http import Headers as Headers
from ._introspection import IntrospectionVerifier as IntrospectionVerifier
from ._jwt import JWTVerifier as JWTVerifier
from ._security import OriginPolicy as OriginPolicy
from ._server import PerBearerServer as PerBearerServer
from ._server import ServerInfo as ServerInfo
from ._server import create_per_bearer_server as create_per_bearer_server
from ._tenancy import ServerFactory as ServerFactory
from ._tenancy import SessionPolicy as SessionPolicy
from ._tenancy import TenantRegistry as TenantRegistry
from ._tenancy import Tenants as Tenants
from ._verifiers import StaticTokenVerifier as StaticTokenVerifier

__all__ = [
    "AsgiMcpError",
    "AuthenticationError",
    "ConfigurationError",
    "Event",
    "EventName",
    "Headers",
    "HttpRequest",
    "InMemoryEventStore",
    "IntrospectionVerifier",
    "JWTVerifier",
    "McpApp",
    "OriginPolicy",
    "PerBearerServer",
    "ProtocolError",
    "SecurityRefusal",
    "ServerInfo",
    "ServerFactory",
    "ServerRegistered",
    "ServerRemoved",
    "ServerUpdated",
    "SessionCreated",
    "SessionEnded",
    "SessionPolicy",
    "StaticTokenVerifier",
    "Started",
    "Stopped",
    "TenantRegistry",
    "Tenants",
    "TokenAdded",
    "TokenRemoved",
    "TokenUpdated",
    "TokenVerifier",
    "ToolCalled",
    "TransportError",
    "create_per_bearer_server",
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

# A library never configures logging; this keeps "no handler" warnings away until the app does.
_logging.getLogger("asgi_mcp").addHandler(_logging.NullHandler())
