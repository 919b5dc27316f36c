"""The 2026-07-28 validation ladder for a request, up to `Mcp-Param-*`: its route, or its refusal.

The SDK's helpers decide (`find_duplicated_routing_header`, `classify_inbound_request`), so the
refusals agree with the SDK's to the letter. A request every rung certainly passes, as nearly all
do, is recognized first with a few reads (`_passing_route`): the route is the one the classifier
would return, and the classifier runs only when that quick test is unsure. `tests/modern/
test_admission.py` holds the two to the same verdicts over generated requests.
"""

from __future__ import annotations

from typing import Any, Final, cast

from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    MCP_METHOD_HEADER,
    MCP_NAME_HEADER,
    MCP_PROTOCOL_VERSION_HEADER,
    NAME_BEARING_METHODS,
    InboundLadderRejection,
    classify_inbound_request,
    find_duplicated_routing_header,
)
from mcp_types import CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY, PROTOCOL_VERSION_META_KEY
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from .._core.asgi import HttpRequest
from .._core.errors import HEADER_MISMATCH, ProtocolError
from .._core.http import Headers
from .._core.jsonrpc import Message, RequestId

__all__: list[str] = []

# (protocol version, client info, client capabilities): the envelope values, raw, as the classifier
# returns them in its `InboundModernRoute`.
Route = tuple[str, Any, Any]

# `decode_header_value` reads a value starting with this as an encoded one; any other comes back verbatim.
_ENCODED_PREFIX: Final = "=?"


def admit(request: HttpRequest, message: Message, *, accepts_sse: bool) -> Route:
    """The request's route (version, client envelope), or its refusal raised."""
    if message.kind != "request":
        raise ProtocolError(
            400,
            "Invalid Request: clients do not send responses on this protocol version",
            reason="response POSTed on the modern wire",
        )
    assert message.id is not None and message.method is not None
    request_id, method = message.id, message.method
    if method == "subscriptions/listen" and not accepts_sse:
        raise ProtocolError(
            406,
            "Not Acceptable: subscriptions/listen answers with text/event-stream",
            request_id=request_id,
            reason="listen without text/event-stream",
        )
    headers = request.headers
    # Only a request where some header name repeats can repeat a routing header.
    duplicated = find_duplicated_routing_header(headers.raw_items()) if headers.repeats else None
    if duplicated is not None:
        raise ProtocolError(
            400, f"{duplicated} header appears more than once", code=HEADER_MISMATCH, request_id=request_id
        )
    route = _passing_route(headers, method, message.params)
    if route is not None:
        return route
    verdict = classify_inbound_request(message.raw, headers=headers)
    if isinstance(verdict, InboundLadderRejection):
        raise rejection(verdict, request_id)
    return verdict.protocol_version, verdict.client_info, verdict.client_capabilities


def _passing_route(headers: Headers, method: str, params: dict[str, Any] | None) -> Route | None:
    """The route `classify_inbound_request` returns when every rung of its ladder certainly passes;
    None when any might not (the classifier then gives the verdict, and the refusal's words)."""
    if params is None:
        return None
    raw_meta: Any = params.get("_meta")
    if type(raw_meta) is not dict:
        return None
    meta = cast("dict[str, Any]", raw_meta)
    if CLIENT_CAPABILITIES_META_KEY not in meta:
        return None
    version: Any = meta.get(PROTOCOL_VERSION_META_KEY)
    if version not in MODERN_PROTOCOL_VERSIONS:
        return None
    if headers.get(MCP_PROTOCOL_VERSION_HEADER) != version or headers.get(MCP_METHOD_HEADER) != method:
        return None
    name_key = NAME_BEARING_METHODS.get(method)
    if name_key is not None:
        value = params.get(name_key)
        if value is not None:
            header = headers.get(MCP_NAME_HEADER)
            if header is None or header != value or header.startswith(_ENCODED_PREFIX):
                return None
    return version, meta.get(CLIENT_INFO_META_KEY), meta[CLIENT_CAPABILITIES_META_KEY]


def rejection(verdict: InboundLadderRejection, request_id: RequestId) -> ProtocolError:
    """A ladder rung's refusal as the error the app's boundary answers with."""
    return ProtocolError(
        ERROR_CODE_HTTP_STATUS.get(verdict.code, 400),
        verdict.message,
        code=verdict.code,
        request_id=request_id,
        data=verdict.data,
        reason=verdict.message,
    )
