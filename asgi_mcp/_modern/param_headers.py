"""`Mcp-Param-*` headers checked against the called tool's input schema (2026-07-28), with the schemas cached.

The SDK lists tools on *every* `tools/call` to find the schema; here each server's listing is kept
for `ttl` seconds (0 disables the cache), so the cost is paid once per interval. The cache is this
module's own state, per served server (`ServerHost`), held weakly: a retired server's entry goes with it.
A listed schema that declares no `Mcp-Param-*` header is kept as None: nothing to check, decided once.
A server with its own lookup (`get_tool_input_schema`, as `MCPServer` has) hands back the tool's schema
object on every call; the verdict on it is kept per server and tool name, keyed by that object's
identity, so a schema with no `Mcp-Param-*` header is walked once, not on every `tools/call`.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Final, cast

from mcp.server.connection import Connection
from mcp.shared.inbound import (
    InboundLadderRejection,
    find_invalid_x_mcp_header,
    validate_mcp_param_headers,
    x_mcp_header_map,
)
from mcp.shared.message import ServerMessageMetadata

from .._core.asgi import HttpRequest
from .._core.jsonrpc import Message
from .._kernel.hosting import ServerHost
from .._kernel.runner import serve_one
from .exchange import ExchangeContext

__all__: list[str] = []

logger = logging.getLogger("asgi_mcp.modern")

_PARAM_PREFIX: Final = "mcp-param-"
_LIST_PAGE_CAP: Final = 100

ToolSchemas = dict[str, Any]
"""Tool name -> its input schema, or None when the schema declares no `Mcp-Param-*` header."""


class RawHeaders(Mapping[str, str]):
    """Header lines as the SDK's `Mcp-Param-*` validator wants them: `items()` keeps repeats visible."""

    def __init__(self, request: HttpRequest) -> None:
        self._request = request

    def __getitem__(self, key: str) -> str:
        return self._request.headers[key]

    def __iter__(self) -> Any:
        return iter(self._request.headers)

    def __len__(self) -> int:
        return len(self._request.headers)

    def items(self) -> Any:
        return self._request.headers.raw_items()


class ParamHeaderCheck:
    """Validates a `tools/call`'s `Mcp-Param-*` headers; owns the per-server schema cache.

    Args:
        ttl: seconds a server's listed schemas are reused (0: list on every call, as the SDK does).
        clock: the loop's clock (`Loop.clock`), read only when a listing may be needed.
    """

    __slots__ = ("_cache", "_clock", "_ttl", "_verdicts")

    def __init__(self, *, ttl: float, clock: Callable[[], float]) -> None:
        self._ttl = ttl
        self._clock = clock
        # host -> (expires at, by `clock`; the schemas). Weak: hosts come and go with tenants.
        self._cache: weakref.WeakKeyDictionary[ServerHost, tuple[float, ToolSchemas]] = weakref.WeakKeyDictionary()
        # host -> tool name -> (the schema its lookup returned, that schema or None if it declares no header).
        # Only names the lookup knows get an entry, one per tool: the table is as small as the tool list.
        self._verdicts: weakref.WeakKeyDictionary[ServerHost, dict[str, tuple[Any, Any]]] = weakref.WeakKeyDictionary()

    async def check(
        self, request: HttpRequest, message: Message, host: ServerHost, protocol_version: str
    ) -> InboundLadderRejection | None:
        """The SDK's verdict on the call's headers, or None when they agree (or nothing can be checked)."""
        params = message.params or {}
        name = params.get("name")
        arguments = params.get("arguments")
        if not isinstance(name, str) or (arguments is not None and not isinstance(arguments, dict)):
            return None  # the kernel answers malformed params itself
        args = cast("dict[str, Any]", arguments or {})
        if not args and not any(key.startswith(_PARAM_PREFIX) for key in request.headers):
            return None  # nothing to compare: no value can disagree with a header
        schema = await self._input_schema(request, host, name, protocol_version, message.raw)
        if schema is None:
            return None
        return validate_mcp_param_headers(schema, args, RawHeaders(request))

    async def _input_schema(
        self, request: HttpRequest, host: ServerHost, name: str, protocol_version: str, raw: dict[str, Any]
    ) -> Any:
        """The tool's input schema: the server's own lookup if it has one, else its (cached) `tools/list`."""
        server = host.server
        if server.get_tool_input_schema is not None:
            try:
                schema = server.get_tool_input_schema(name)
            except Exception:
                logger.exception("get_tool_input_schema raised; Mcp-Param headers not validated")
                return None
            return self._declared(host, name, schema)
        now = self._clock()
        cached = self._cache.get(host)
        if cached is None or cached[0] <= now:
            schemas = await _list_schemas(request, host, protocol_version, raw)
            if schemas is None:
                return None
            cached = (now + self._ttl, schemas)
            if self._ttl > 0:
                self._cache[host] = cached
        return cached[1].get(name)

    def _declared(self, host: ServerHost, name: str, schema: Any) -> Any:
        """`schema` if it declares an `Mcp-Param-*` header, else None; decided once per schema object.

        The same object back means the same verdict: a lookup hands back the tool's own schema, built
        when the tool was registered. A new object (the tool replaced) is judged afresh.
        """
        if schema is None:
            return None
        verdicts = self._verdicts.get(host)
        if verdicts is None:
            verdicts = self._verdicts.setdefault(host, {})
        known = verdicts.get(name)
        if known is not None and known[0] is schema:
            return known[1]
        declared = schema if _declares_param_headers(schema) else None
        verdicts[name] = (schema, declared)
        return declared


async def _list_schemas(
    request: HttpRequest, host: ServerHost, protocol_version: str, raw: dict[str, Any]
) -> ToolSchemas | None:
    """Every tool's schema, through the server's own `tools/list` (all pages, up to a cap); None if it fails."""
    if host.server.get_request_handler("tools/list") is None:
        return None
    params = cast("dict[str, Any]", raw.get("params") or {})
    meta = dict(cast("dict[str, Any]", params.get("_meta") or {}))
    meta.pop("progressToken", None)
    schemas: ToolSchemas = {}
    list_params: dict[str, Any] = {"_meta": meta}
    seen: set[str] = set()
    for _ in range(_LIST_PAGE_CAP):
        connection = Connection.from_envelope(
            protocol_version,
            meta.get("io.modelcontextprotocol/clientInfo"),
            meta.get("io.modelcontextprotocol/clientCapabilities"),
        )
        dctx = ExchangeContext(
            request.headers,
            "asgi-mcp-schema-lookup",
            ServerMessageMetadata(request_context=request, can_send_request=False),
        )
        try:
            result = await serve_one(host, dctx, "tools/list", list_params, connection)
        except Exception:
            # Fail open, as the SDK does: header validation must never break a working call.
            logger.exception("tools/list failed; Mcp-Param headers not validated")
            return None
        _collect(schemas, result)
        cursor = result.get("nextCursor")
        if not isinstance(cursor, str) or cursor in seen:
            return schemas
        seen.add(cursor)
        list_params = {"_meta": meta, "cursor": cursor}
    return schemas


def _collect(schemas: ToolSchemas, result: dict[str, Any]) -> None:
    """Add one `tools/list` page's tools to `schemas`."""
    for tool in cast("list[Any]", result.get("tools", [])):
        if isinstance(tool, dict):
            entry = cast("dict[str, Any]", tool)
            name = entry.get("name")
            if isinstance(name, str):
                schema = entry.get("inputSchema")
                # Decided once per listing rather than walking the schema on every call.
                schemas[name] = schema if _declares_param_headers(schema) else None


def _declares_param_headers(schema: Any) -> bool:
    """Whether `validate_mcp_param_headers` can refuse any call against `schema`.

    It validates nothing for a schema with an invalid annotation, and with no annotation it has no
    header to compare (stray `Mcp-Param-*` headers are not its concern), so either way it passes.
    """
    return find_invalid_x_mcp_header(schema) is None and bool(x_mcp_header_map(schema))
