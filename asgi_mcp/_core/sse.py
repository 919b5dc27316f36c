"""Pure Server-Sent Events framing (WHATWG HTML, "Server-sent events"): bytes out, nothing else.

JSON-RPC messages are serialised without newlines (`json.dumps` escapes them), so one message is one
`data:` line; the general encoder still splits on any line break so arbitrary text frames correctly.
"""

from __future__ import annotations

from typing import Final

__all__ = ["encode_event", "KEEPALIVE", "SSE_HEADERS"]

KEEPALIVE: Final = b": ping\n\n"

SSE_HEADERS: Final[list[tuple[bytes, bytes]]] = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]


def encode_event(
    data: str,
    *,
    event: str | None = "message",
    event_id: str | None = None,
    retry_ms: int | None = None,
) -> bytes:
    """One SSE event. `data` may be empty (the SEP-1699 priming event has an id and empty data)."""
    parts: list[str] = []
    if event_id is not None:
        if "\n" in event_id or "\r" in event_id or "\0" in event_id:
            raise ValueError("SSE event ids cannot contain line breaks or NUL")
        parts.append(f"id: {event_id}\n")
    if retry_ms is not None:
        parts.append(f"retry: {int(retry_ms)}\n")
    if event is not None:
        parts.append(f"event: {event}\n")
    lines = (
        [data] if "\n" not in data and "\r" not in data else data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    )
    parts.extend(f"data: {line}\n" for line in lines)
    parts.append("\n")
    return "".join(parts).encode()
