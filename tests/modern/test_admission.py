"""The modern validation ladder (`_modern.admission`) gives the SDK's verdicts, to the letter.

`admit` recognizes a request every rung passes before the SDK's classifier runs, and looks for
repeated routing headers only when some header is repeated; over generated requests (each rung
passing or failing, encoded `Mcp-Name` values, repeated headers) its route or refusal is held to
what `find_duplicated_routing_header` and `classify_inbound_request` decide.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    InboundLadderRejection,
    classify_inbound_request,
    find_duplicated_routing_header,
)

from asgi_mcp._core.asgi import HttpRequest
from asgi_mcp._core.errors import HEADER_MISMATCH, ProtocolError
from asgi_mcp._core.http import Headers
from asgi_mcp._core.jsonrpc import classify
from asgi_mcp._modern.admission import admit
from tests.kit.messages import MODERN

VERSION_KEY = "io.modelcontextprotocol/protocolVersion"
CAPS_KEY = "io.modelcontextprotocol/clientCapabilities"
INFO_KEY = "io.modelcontextprotocol/clientInfo"

scalars = st.none() | st.booleans() | st.integers(-2, 2) | st.sampled_from(["", "echo", "=?base64?ZWNobw==?="])
methods = st.sampled_from(["tools/call", "prompts/get", "resources/read", "tools/list", "custom/thing"])
names = st.sampled_from(["echo", "héllo", "a b", "file:///x", "=?base64?ZWNobw==?=", "=?base64?***?="]) | scalars
# Which part of an otherwise passing request is changed (mostly none: the ladder's passing case).
CHANGES = ("none", "none", "none", "params", "meta", "caps", "info", "version", "header-version")
CHANGES += ("header-method", "header-name", "repeat", "repeat-other")


def encoded(value: str) -> str:
    return "=?base64?" + base64.b64encode(value.encode()).decode() + "?="


@st.composite
def requests(draw: st.DrawFn) -> tuple[dict[str, Any], list[tuple[bytes, bytes]]]:
    """A request that passes every rung, or has one part changed (which may or may not fail one)."""
    change = draw(st.sampled_from(CHANGES))
    method = draw(methods)
    name = draw(names)
    version: Any = draw(scalars | st.just("2025-11-25")) if change == "version" else MODERN
    meta: Any = {VERSION_KEY: version, CAPS_KEY: draw(st.just({}) | scalars) if change == "caps" else {}}
    if change == "caps" and draw(st.booleans()):
        del meta[CAPS_KEY]
    if change == "version" and draw(st.booleans()):
        del meta[VERSION_KEY]
    if change == "info" or draw(st.booleans()):
        meta[INFO_KEY] = draw(st.just({"name": "c", "version": "1"}) | scalars)
    if change == "meta":
        meta = draw(scalars | st.lists(scalars, max_size=1))
    params: dict[str, Any] = {"_meta": meta}
    if method != "tools/list" or draw(st.booleans()):
        params["name" if method != "resources/read" else "uri"] = name
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": 7, "method": method}
    if change != "params":
        body["params"] = params
    text = name if isinstance(name, str) else str(name)
    header_name = draw(st.sampled_from(["encoded", "encoded-other", "junk", "other", "missing"]))
    names_header = {"encoded": encoded(text), "encoded-other": encoded(text + "!"), "junk": "=?base64?***?="}
    version_header = draw(st.sampled_from([MODERN, "2026-01-01", None])) if change == "header-version" else version
    method_header = draw(st.sampled_from(["tools/list", "tools/call", None])) if change == "header-method" else method
    name_header = names_header.get(header_name, None if header_name == "missing" else "nope")
    lines = {
        "content-type": "application/json",
        "mcp-protocol-version": str(version_header) if version_header is not None else None,
        "mcp-method": method_header,
        "mcp-name": name_header if change == "header-name" else text,
    }
    headers = [(key, value) for key, value in lines.items() if value is not None]
    if change in ("repeat", "repeat-other"):
        repeated = ("accept", "MCP-Name") if change == "repeat-other" else tuple(lines)
        headers.append((draw(st.sampled_from(repeated)), "again"))
    raw = [(key.encode(), value.encode("utf-8").decode("latin-1").encode("latin-1")) for key, value in headers]
    return body, draw(st.permutations(raw))


def sdk_verdict(body: dict[str, Any], headers: Headers) -> Any:
    duplicated = find_duplicated_routing_header(headers.raw_items())
    if duplicated is not None:
        return ("refused", 400, HEADER_MISMATCH, f"{duplicated} header appears more than once", None, 7)
    verdict = classify_inbound_request(body, headers=headers)
    if isinstance(verdict, InboundLadderRejection):
        status = ERROR_CODE_HTTP_STATUS.get(verdict.code, 400)
        return ("refused", status, verdict.code, verdict.message, verdict.data, 7)
    return ("route", verdict.protocol_version, verdict.client_info, verdict.client_capabilities)


def our_verdict(body: dict[str, Any], headers: Headers) -> Any:
    request = HttpRequest("POST", "/mcp", headers, {})
    try:
        version, info, capabilities = admit(request, classify(body), accepts_sse=True)
    except ProtocolError as error:
        return ("refused", error.status, error.code, error.message, error.data, error.request_id)
    return ("route", version, info, capabilities)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(request=requests())
def test_admission_agrees_with_the_sdk_ladder(request: tuple[dict[str, Any], list[tuple[bytes, bytes]]]) -> None:
    body, raw = request
    headers = Headers(raw)
    ours, sdk = our_verdict(body, headers), sdk_verdict(body, headers)
    assert ours == sdk
    if ours[0] == "route":  # the envelope's own objects, as the classifier hands them on
        meta = body["params"]["_meta"]
        assert ours[3] is meta[CAPS_KEY]
        assert ours[2] is meta.get(INFO_KEY)


@pytest.mark.parametrize(
    ("name", "name_header", "accepted"),
    [
        ("echo", "echo", True),
        ("echo", encoded("echo"), True),
        ("echo", encoded("other"), False),
        ("echo", "x", False),
        # Header and body alike, but the header is an encoded value (or a malformed one): it decodes
        # to something else (or nothing), so they do not match.
        (encoded("echo"), encoded("echo"), False),
        ("=?base64?***?=", "=?base64?***?=", False),
    ],
)
def test_an_encoded_name_is_decoded_before_it_is_compared(name: str, name_header: str, accepted: bool) -> None:
    body = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": name, "_meta": {VERSION_KEY: MODERN, CAPS_KEY: {}}},
    }
    routing = {"mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": name_header}
    headers = Headers([(key.encode(), value.encode()) for key, value in routing.items()])
    verdict = our_verdict(body, headers)
    assert verdict == sdk_verdict(body, headers)
    assert (verdict[0] == "route") is accepted
