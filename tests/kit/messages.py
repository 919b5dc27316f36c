"""MCP on the wire, independent of any transport: JSON-RPC message builders for both eras, and a parser
for the `WWW-Authenticate: Bearer ...` challenges the app answers with."""

from __future__ import annotations

from typing import Any, Final

from mcp_types import CLIENT_CAPABILITIES_META_KEY, LOG_LEVEL_META_KEY, PROTOCOL_VERSION_META_KEY

LEGACY: Final = "2025-11-25"
MODERN: Final = "2026-07-28"


def request(request_id: int | str, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return message


def notification(method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    return message


def initialize(
    request_id: int = 0, version: str = LEGACY, capabilities: dict[str, Any] | None = None
) -> dict[str, Any]:
    return request(
        request_id,
        "initialize",
        {
            "protocolVersion": version,
            "capabilities": capabilities or {},
            "clientInfo": {"name": "asgi-mcp-tests", "version": "0"},
        },
    )


def call_tool(
    request_id: int, name: str, arguments: dict[str, Any] | None = None, *, progress_token: Any = None
) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name, "arguments": arguments or {}}
    if progress_token is not None:
        params["_meta"] = {"progressToken": progress_token}
    return request(request_id, "tools/call", params)


def modern(
    request_id: int | str,
    method: str,
    params: dict[str, Any] | None = None,
    *,
    log_level: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """A 2026-07-28 request: the body with its `_meta` envelope, and the routing headers that match it."""
    body_params = dict(params or {})
    meta = dict(body_params.get("_meta") or {})
    meta[PROTOCOL_VERSION_META_KEY] = MODERN
    meta[CLIENT_CAPABILITIES_META_KEY] = {}
    if log_level is not None:
        meta[LOG_LEVEL_META_KEY] = log_level
    body_params["_meta"] = meta
    all_headers = {"mcp-protocol-version": MODERN, "mcp-method": method}
    if method == "tools/call" or method == "prompts/get":
        all_headers["mcp-name"] = body_params["name"]
    all_headers.update(headers or {})
    return request(request_id, method, body_params), all_headers


def challenge_params(value: str) -> dict[str, str]:
    """Parse a `Bearer k="v", ...` challenge (quoted-string escapes undone)."""
    assert value.startswith("Bearer"), value
    rest = value[len("Bearer") :].strip()
    params: dict[str, str] = {}
    i = 0
    while i < len(rest):
        eq = rest.index("=", i)
        key = rest[i:eq].strip().lstrip(",").strip()
        assert rest[eq + 1] == '"', value
        j, chars = eq + 2, []
        while rest[j] != '"':
            if rest[j] == "\\":
                j += 1
            chars.append(rest[j])
            j += 1
        params[key] = "".join(chars)
        i = j + 1
        while i < len(rest) and rest[i] in ", ":
            i += 1
    return params
