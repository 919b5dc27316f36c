"""hypercorn's access log, with records that hold nothing secret.

hypercorn passes its "atoms" to the access logger as the record's `args`: every request header
(`Authorization`, `Cookie`, `Proxy-Authorization` included), every response header and the whole
process environment. The formatted line shows only what the format names, but handlers that ship
`args` (JSON formatters, error trackers) would send all of it. Here the atoms are exactly the ones
the line shows, built from the ASGI scope without reading any header.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from hypercorn.logging import Logger
from hypercorn.typing import ResponseSummary, WWWScope

from .http1.access_log import ACCESS_LOG_FORMAT

__all__ = ["ACCESS_LOG_FORMAT", "SanitisedAccessLogger"]


class SanitisedAccessLogger(Logger):
    """hypercorn's logger (its error log unchanged) whose access records carry only the atoms of
    `ACCESS_LOG_FORMAT`: no header, no query string, no environment."""

    def atoms(self, request: WWWScope, response: ResponseSummary | None, request_time: float) -> Mapping[str, str]:
        client = request["client"]
        return {
            "h": f"{client[0]}:{client[1]}" if client else "-",
            "m": request["method"] if request["type"] == "http" else "GET",
            "U": request["path"],
            "H": f"HTTP/{request['http_version']}",
            "s": str(response["status"]) if response is not None else "-",
            "b": _content_length(response["headers"]) if response is not None else "-",
        }


def _content_length(headers: Iterable[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name.lower() == b"content-length":
            return value.decode("latin-1")
    return "-"
