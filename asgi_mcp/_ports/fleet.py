"""What the workers of one fleet share, as one object: the session directory, the message bus and,
optionally, the event store. `McpApp(fleet=...)` takes it; `McpApp(redis_url=...)` builds the Redis one
(`asgi_mcp._stores.fleet_from_url`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from mcp.server.streamable_http import EventStore

from .message_bus import MessageBus
from .session_directory import SessionDirectory

__all__ = ["FleetStores"]


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetStores:
    """The stores the workers of one fleet share.

    Args:
        directory: where each legacy session's record lives, so any worker can adopt it.
        bus: how workers reach each other's sessions (DELETE, a GET stream's messages, answers to
            server-to-client requests).
        event_store: the events `Last-Event-ID` replays; shared too, or a replay works only on the
            worker that wrote them. None: the app's `event_store` (or none).
        secret: keys the owner digests the directory keeps (HMAC-SHA256), so a copy of the directory
            cannot be checked against guessed tokens; None: a plain SHA-256 of the owner key.
    """

    directory: SessionDirectory
    bus: MessageBus
    event_store: EventStore | None = None
    secret: bytes | None = None
    # The URL `fleet_from_url` built them from (never shown: it may carry a password).
    url: str | None = field(default=None, repr=False)
