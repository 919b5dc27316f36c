"""Era negotiation: which endpoint answers a request on the MCP path, and whether it may.

The era comes from `MCP-Protocol-Version` (none or a dated version up to 2025-11-25: the legacy,
session-based era; 2026-07-28 and later: the modern, stateless one). A POST is checked for its
Content-Type, its body read under the size limit and parsed, then handed to the era's endpoint
with what its `Accept` header allows; a bad version on a POST is reported after the body is read,
so that its error names the request's id. GET (the legacy stream) and DELETE (legacy session end)
exist only in the legacy era; every other method is 405.

`post` and `get_or_delete` are called straight from the app's request handler: POST, the hot
path, costs no extra call level. A request whose authorization can end (a tenant token, a verified
token with an expiry) goes through `held` instead, which runs the same two under the token's
hold (`_tenancy.grants`): the exchange ends, and writes nothing more, when the token stops working.
A request over its tenant's rate limits gets 429 once its body is parsed (`Operations.limit`).
"""

from __future__ import annotations

from collections.abc import Callable

from mcp.server.auth.provider import AccessToken

from .._auth.principal import Principal
from .._core.asgi import ClientGone, HttpRequest, Receive, Send, read_body, send_error
from .._core.errors import ProtocolError
from .._core.http import (
    ERA_OF_RAW,
    JSON_CONTENT_TYPE,
    accepts_raw,
    era_of_raw,
    is_json_content_type_raw,
    method_not_allowed,
)
from .._core.jsonrpc import parse_body
from .boundary import Responder
from .runtime import Runtime

__all__ = ["get_or_delete", "held", "post"]


async def post(
    runtime: Runtime, request: HttpRequest, principal: Principal, receive: Receive, send: Send, *, held: bool = False
) -> None:
    """A JSON-RPC message: to the modern endpoint, or to the legacy one (which needs JSON accepted).
    `held`: the exchange runs under its token's hold, a cancel scope of the app's own (`held`)."""
    # The header lines as sent, compared as bytes: the values clients send need no decoding.
    raw = request.headers.raw
    # The version is checked after the body is read, so the error names the request's id.
    version_error = None
    version_line = raw.get(b"mcp-protocol-version")
    known = ERA_OF_RAW.get(version_line)  # `era_of_raw`, inline for the versions clients send
    if known is not None:
        era = known[0]
    else:
        try:
            era, _ = era_of_raw(version_line)
        except ProtocolError as error:
            era, version_error = "modern", error
    json_ok, sse_ok = accepts_raw(raw.get(b"accept"))
    content_type = raw.get(b"content-type")
    if content_type != JSON_CONTENT_TYPE and not is_json_content_type_raw(content_type):
        raise ProtocolError(
            415,
            "Unsupported Media Type: Content-Type must be application/json",
            reason="Content-Type is not application/json",
        )
    body = await read_body(receive, runtime.max_body_size, raw.get(b"content-length"))
    message = parse_body(body)
    if version_error is not None:
        version_error.request_id = message.id
        raise version_error
    operations = runtime.operations
    if operations is not None and (pending := operations.limit(principal, message)) is not None:
        await pending
    if era == "modern":
        host = await principal.host()
        observers, tenant_id = runtime.tool_observers, principal.tenant_id
        observe = observers.anonymous if tenant_id is None else observers.of_tenant(tenant_id)  # made once
        await runtime.modern.post(
            request,
            message,
            host,
            receive,
            send,
            accepts_json=json_ok,
            accepts_sse=sse_ok,
            observe=observe,
        )
        return
    if not json_ok:
        raise ProtocolError(
            406, "Not Acceptable: client must accept application/json", reason="Accept lacks application/json"
        )
    await runtime.legacy.post(request, message, principal, send, accepts_sse=sse_ok, enclosed=held)


async def get_or_delete(
    runtime: Runtime, request: HttpRequest, principal: Principal, receive: Receive, send: Send
) -> None:
    """A legacy session's stream (GET) or its end (DELETE); 405 for the modern era and other methods
    (a malformed version is reported first, as for any request)."""
    method = request.method
    raw = request.headers.raw
    era, _ = era_of_raw(raw.get(b"mcp-protocol-version"))
    if method == "GET":
        if era == "modern":
            raise method_not_allowed("POST")
        if not accepts_raw(raw.get(b"accept"))[1]:
            raise ProtocolError(
                406,
                "Not Acceptable: GET requires Accept: text/event-stream",
                reason="GET without text/event-stream",
            )
        await runtime.legacy.get(request, principal, receive, send)
    elif method == "DELETE":
        if era == "modern":
            raise method_not_allowed("POST")
        await runtime.legacy.delete(request, principal, send)
    else:
        raise method_not_allowed("GET, POST, DELETE")


async def held(
    runtime: Runtime,
    request: HttpRequest,
    principal: Principal,
    access: AccessToken | None,
    receive: Receive,
    responder: Responder,
    refusal: Callable[[HttpRequest], ProtocolError],
) -> None:
    """`post` or `get_or_delete` under the token's authorization: when the token stops working
    (removed, rotated out, expired), the exchange ends and writes nothing more; the response ends
    with no more content (`refusal`, a 401, if nothing was sent yet)."""
    operations = runtime.operations
    assert operations is not None
    with operations.hold(principal, access, responder) as hold:
        operations.session_used(request.headers.get("mcp-session-id"), principal.tenant_id)
        if request.method == "POST":
            await post(runtime, request, principal, receive, hold.send, held=True)
        else:
            await get_or_delete(runtime, request, principal, receive, hold.send)
    if hold.cut_caught:
        try:
            if not responder.started:
                await send_error(responder, refusal(request))
            elif not responder.finished:
                await responder({"type": "http.response.body", "body": b"", "more_body": False})
        except ClientGone:
            pass
