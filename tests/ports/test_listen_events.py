"""The bus payload of a relayed `subscriptions/listen` event: every event kind survives the trip with its
tenant and origin worker, and anything malformed or unknown is refused (None), never guessed at."""

from __future__ import annotations

import json

import pytest
from mcp.shared.subscriptions import (
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ServerEvent,
    ToolsListChanged,
)

from asgi_mcp._ports.listen_events import RelayedEvent, decode_event, encode_event

EVENTS: list[ServerEvent] = [
    ToolsListChanged(),
    PromptsListChanged(),
    ResourcesListChanged(),
    ResourceUpdated(uri="file:///ünïcode?q=1"),
]


@pytest.mark.parametrize("event", EVENTS)
@pytest.mark.parametrize("tenant_id", ["acme", None, ""])
def test_every_event_travels_with_its_tenant_and_origin(event: ServerEvent, tenant_id: str | None) -> None:
    assert decode_event(encode_event(tenant_id, "w1", event)) == RelayedEvent(tenant_id, "w1", event)


@pytest.mark.parametrize(
    "payload",
    [
        "",
        "not json",
        "[]",
        json.dumps({"w": "w1", "m": "notifications/tools/list_changed"}),  # no tenant
        json.dumps({"t": "acme", "m": "notifications/tools/list_changed"}),  # no origin
        json.dumps({"t": 7, "w": "w1", "m": "notifications/tools/list_changed"}),
        json.dumps({"t": "acme", "w": None, "m": "notifications/tools/list_changed"}),
        json.dumps({"t": "acme", "w": "w1", "m": "notifications/message"}),  # not a listen event
        json.dumps({"t": "acme", "w": "w1", "m": 3}),
        json.dumps({"t": "acme", "w": "w1", "m": "notifications/resources/updated"}),  # no URI
        json.dumps({"t": "acme", "w": "w1", "m": "notifications/resources/updated", "u": 5}),
    ],
)
def test_a_malformed_payload_is_refused(payload: str) -> None:
    assert decode_event(payload) is None
