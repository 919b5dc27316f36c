"""The wire form of a plain tool result, without the SDK's dump-validate-dump round.

`ServerRunner._serialize` dumps a handler's `CallToolResult` (`model_dump`), validates the dump
against the protocol version's surface model and dumps that again (`serialize_server_result`):
about 70 000 instructions per `tools/call`, more than the transport's whole HTTP layer, and for
nearly every result (text blocks, maybe structured content, an error flag) the outcome is known
beforehand: the same values, the surface's key order. `plain_tool_result` gives that outcome for
the results it is sure of and None for any other (annotations, `_meta`, images, resources, values
JSON would change, ...), which then take the SDK's path. `tests/kernel/test_results.py` holds the
two to the same output over generated results for every served version.

The key orders are read off the SDK's own sieve at import (one probe result per version), and a
version whose probe comes back in any other shape is never served here.
"""

from __future__ import annotations

import math
from typing import Any, Final

from mcp_types import CallToolResult, TextContent
from mcp_types import methods as sdk_methods
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

__all__: list[str] = []


class NotPlain(Exception):
    """A value whose JSON dump is not itself (a tuple, a NaN, a key that is not a string, ...)."""


def plain_copy(value: Any) -> Any:
    """A fresh copy of JSON-native data (dicts with string keys, lists, strings, numbers, booleans,
    None) equal to what a pydantic JSON-mode dump makes of it; raises `NotPlain` for anything else."""
    kind = type(value)  # pyright: ignore[reportUnknownVariableType]  # exact: a subclass may dump otherwise
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:
        if math.isfinite(value):
            return value
        raise NotPlain  # JSON mode turns inf and nan into null
    if kind is dict:
        copied: dict[str, Any] = {}
        for key, item in value.items():
            if type(key) is not str:
                raise NotPlain
            copied[key] = plain_copy(item)
        return copied
    if kind is list:
        return [plain_copy(item) for item in value]
    raise NotPlain


def _written_as_here(version: str) -> bool:
    """Whether the SDK's sieve writes a tool result at `version` as `plain_tool_result` does: the
    same fields in the same order (`content`, `isError`, `resultType` on the 2026 surface,
    `structuredContent`), text blocks as `text`, `type`."""
    probe = {
        "content": [{"type": "text", "text": "t"}],
        "isError": False,
        "structuredContent": {"k": 1},
        "resultType": "complete",
    }
    modern = version in MODERN_PROTOCOL_VERSIONS
    expected = ("content", "isError", "resultType", "structuredContent") if modern else _LEGACY_KEYS
    try:
        sieved = sdk_methods.serialize_server_result("tools/call", version, probe)
        blocks: list[Any] = sieved["content"]
    except Exception:  # a surface this module does not know: never served here
        return False
    return tuple(sieved) == expected and len(blocks) == 1 and tuple(blocks[0]) == ("text", "type")


_LEGACY_KEYS: Final = ("content", "isError", "structuredContent")
# The versions served here, each with whether its surface writes `resultType`.
_SERVED: Final = {
    version: version in MODERN_PROTOCOL_VERSIONS
    for version in (*HANDSHAKE_PROTOCOL_VERSIONS, *MODERN_PROTOCOL_VERSIONS)
    if _written_as_here(version)
}


def plain_tool_result(result: Any, version: str) -> dict[str, Any] | None:
    """What `_dump_result` then `serialize_server_result("tools/call", version, ...)` make of
    `result`, when it is a `CallToolResult` of text blocks (and maybe structured content) with
    nothing the surface could drop, reorder inside a value or refuse; None when not sure."""
    if type(result) is not CallToolResult:
        return None
    with_result_type = _SERVED.get(version)
    if with_result_type is None or result.meta is not None or result.__pydantic_extra__:
        return None
    is_error, structured = result.is_error, result.structured_content
    if type(is_error) is not bool or result.result_type != "complete":
        return None
    content: list[Any] = result.content
    if type(content) is not list:  # pyright: ignore[reportUnnecessaryComparison]  # assigned unvalidated
        return None
    blocks: list[dict[str, Any]] = []
    for block in content:
        if type(block) is not TextContent or block.annotations is not None or block.meta is not None:
            return None
        text = block.text
        if type(text) is not str or block.type != "text" or block.__pydantic_extra__:
            return None
        blocks.append({"text": text, "type": "text"})
    shaped: dict[str, Any] = {"content": blocks, "isError": is_error}
    if with_result_type:
        shaped["resultType"] = "complete"
    if structured is not None:
        if type(structured) is not dict:
            return None  # the surfaces differ on anything but an object
        try:
            shaped["structuredContent"] = plain_copy(structured)
        except NotPlain:
            return None
    return shaped
