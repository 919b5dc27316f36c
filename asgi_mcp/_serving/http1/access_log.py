"""The access log: one INFO record per response on `asgi_mcp.access`, off unless asked for.

A record holds the client address, method, path without query string, HTTP version, status and body
bytes sent, and nothing else: no header and no query string reaches any attribute (args included).
The path is the raw, still percent-encoded one, so no control character reaches a log line either.
"""

from __future__ import annotations

import logging
from typing import Final

__all__ = ["ACCESS_LOGGER", "log_access"]

ACCESS_LOGGER: Final = "asgi_mcp.access"
_logger: Final = logging.getLogger(ACCESS_LOGGER)


def log_access(
    client: tuple[str, int] | None, method: str, raw_path: bytes, version: str, status: int, size: int
) -> None:
    if not _logger.isEnabledFor(logging.INFO):
        return
    peer = f"{client[0]}:{client[1]}" if client is not None else "-"
    _logger.info('%s "%s %s HTTP/%s" %d %d', peer, method, raw_path.decode("ascii"), version, status, size)
