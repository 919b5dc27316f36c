"""The built-in HTTP/1.1 server: any ASGI 3 app (HTTP and lifespan) on anyio, so on asyncio and Trio.

`serve(app, config, task_status=...)` runs it in the caller's event loop; `ServerConfig` holds the
limits and timeouts. Request heads are parsed by httptools when installed, by h11 otherwise; both sit
behind the same checks (`head.py`) and the same body framing (`body.py`), so they behave the same.
"""

from .config import ServerConfig
from .errors import ClientDisconnected
from .server import BoundAddress, listen, serve

__all__ = ["BoundAddress", "ClientDisconnected", "ServerConfig", "listen", "serve"]
