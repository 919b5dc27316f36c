"""asgi_mcp: a pure-ASGI MCP Streamable HTTP server transport on anyio (asyncio and Trio)."""

import logging as _logging

from ._app import McpApp as McpApp
from ._asgi import HttpRequest as HttpRequest
from ._errors import AsgiMcpError as AsgiMcpError
from ._errors import ConfigurationError as ConfigurationError
from ._errors import ProtocolError as ProtocolError
from ._errors import SecurityRefusal as SecurityRefusal
from ._event_store import InMemoryEventStore as InMemoryEventStore
from ._http import Headers as Headers

__all__ = [
    "AsgiMcpError",
    "ConfigurationError",
    "Headers",
    "HttpRequest",
    "InMemoryEventStore",
    "McpApp",
    "ProtocolError",
    "SecurityRefusal",
]

__version__ = "0.1.0"

# Reprs and docs name the public path (asgi_mcp.McpApp), not the private module.
for _public in __all__:
    globals()[_public].__module__ = __name__

# A library never configures logging; this keeps "no handler" warnings away until the app does.
_logging.getLogger("asgi_mcp").addHandler(_logging.NullHandler())
