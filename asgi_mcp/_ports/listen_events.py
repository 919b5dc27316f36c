"""`subscriptions/listen` events as they cross the workers of a fleet on the message bus.

The SDK's subscription bus carries typed events (`mcp.shared.subscriptions`), in process. A fleet
relays each one on its tenant's bus channel `listen` as JSON that names the tenant, the worker that
published it and the event (its wire method, and the URI of a resource update). The receiving side
drops a message whose tenant is not the channel's (whatever the bus did: a forged or misrouted
message never reaches another tenant's listeners) and one its own worker published (delivered
there already, so each listener gets each event once).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final, cast

from mcp.shared.subscriptions import (
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ServerEvent,
    ToolsListChanged,
    event_from_wire,
)

__all__ = ["LISTEN_CHANNEL", "RelayedEvent", "decode_event", "encode_event"]

LISTEN_CHANNEL: Final = "listen"

_METHODS: Final[dict[type, str]] = {
    ToolsListChanged: "notifications/tools/list_changed",
    PromptsListChanged: "notifications/prompts/list_changed",
    ResourcesListChanged: "notifications/resources/list_changed",
    ResourceUpdated: "notifications/resources/updated",
}


@dataclass(frozen=True, slots=True)
class RelayedEvent:
    """One event as another worker published it: for `tenant_id`'s listeners, from worker `origin`."""

    tenant_id: str | None
    origin: str
    event: ServerEvent


def encode_event(tenant_id: str | None, origin: str, event: ServerEvent) -> str:
    """The bus payload of `event`, published by worker `origin` for `tenant_id`'s listeners."""
    fields: dict[str, Any] = {"t": tenant_id, "w": origin, "m": _METHODS[type(event)]}
    if isinstance(event, ResourceUpdated):
        fields["u"] = event.uri
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False)


def decode_event(payload: str) -> RelayedEvent | None:
    """The event a bus payload carries; None for anything malformed or unknown."""
    try:
        fields = cast("dict[str, Any]", json.loads(payload))
        tenant_id, origin, method = fields["t"], fields["w"], fields["m"]
    except (ValueError, KeyError, TypeError):
        return None
    if not (tenant_id is None or isinstance(tenant_id, str)) or not isinstance(origin, str):
        return None
    if not isinstance(method, str):
        return None
    uri = fields.get("u")
    event = event_from_wire(method, {"uri": uri} if isinstance(uri, str) else None)
    return RelayedEvent(tenant_id, origin, event) if event is not None else None
