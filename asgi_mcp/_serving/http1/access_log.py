"""The access log: one INFO record per response on `asgi_mcp.access`, off unless asked for.

A record holds the client address, method, path without query string, HTTP version, status and body
bytes sent, and nothing else: no header and no query string reaches any attribute (args included).
The path is the raw, still percent-encoded one, so no control character reaches a log line either.
"""

from __future__ import annotations

import logging
from typing import Final

__all__ = ["ACCESS_LOGGER", "ACCESS_LOG_FORMAT", "log_access"]

ACCESS_LOGGER: Final = "asgi_mcp.access"
# Client address, method, path without the query string, HTTP version, status, response size: the
# record's `args` are exactly these (a query string or a header may carry a secret).
ACCESS_LOG_FORMAT: Final = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s'
_logger: Final = logging.getLogger(ACCESS_LOGGER)


def log_access(
    client: tuple[str, int] | None, method: str, raw_path: bytes, version: str, status: int, size: int
) -> None:
    if not _logger.isEnabledFor(logging.INFO):
        return
    atoms = {
        "h": f"{client[0]}:{client[1]}" if client is not None else "-",
        "m": method,
        "U": raw_path.partition(b"?")[0].decode("ascii"),
        "H": f"HTTP/{version}",
        "s": str(status),
        "b": str(size),
    }
    _logger.info(ACCESS_LOG_FORMAT, atoms)
