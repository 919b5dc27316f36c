"""Pure HTTP header logic for the MCP endpoint: no I/O, no clock.

Everything here takes header values (as ASGI delivers them: lowercase names, latin-1 bytes) and
returns plain values or raises `ProtocolError` with the precise status the spec asks for.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final, Literal, cast

from .errors import INVALID_REQUEST, UNSUPPORTED_PROTOCOL_VERSION, ProtocolError

__all__ = ["Headers"]

LEGACY_VERSIONS: Final = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
MODERN_VERSIONS: Final = ("2026-07-28",)
SUPPORTED_VERSIONS: Final = LEGACY_VERSIONS + MODERN_VERSIONS
# Spec 2025-06-18: a request without the header is assumed to speak 2025-03-26.
DEFAULT_LEGACY_VERSION: Final = "2025-03-26"
# First version whose clients understand an SSE event with empty data (the priming event, SEP-1699).
FIRST_PRIMING_VERSION: Final = "2025-11-25"

Era = Literal["legacy", "modern"]

JSON_CONTENT_TYPE: Final = b"application/json"
SSE_CONTENT_TYPE: Final = b"text/event-stream"


class Headers(Mapping[str, str]):
    """Read-only, case-insensitive view of request headers, built once per request.

    Handlers read it through the SDK (`ctx.request.headers`, `Context.headers`), so it behaves like
    the mappings they already know: `get("Authorization")` and `get("authorization")` agree. A
    repeated header keeps its first value; `getlist` returns them all. Values lose the optional
    whitespace around them (RFC 9110 5.5): h11 strips it, httptools does not, and the answer must
    not depend on the server.

    Built for the cost of one dict of the lines as the server sent them (`raw`): a value is decoded
    when it is read, so the headers nobody reads cost nothing. The transport's own reads go straight
    to `raw` and compare bytes (`accepts_raw`, `era_of_raw`, ...); `repeats` says whether some name
    came more than once.
    """

    __slots__ = ("_lines", "raw", "repeats")

    def __init__(self, sent: Iterable[tuple[bytes, bytes]]) -> None:
        lines = cast("list[tuple[bytes, bytes]]", sent) if type(sent) is list else list(sent)
        raw: dict[bytes, bytes] = dict(lines)  # the last value of each name; the first is kept below
        names = b"".join(raw)
        # ASGI servers send lowercase names (and distinct ones nearly always): then this is all.
        if len(raw) != len(lines) or not (names.islower() and names.isascii()):
            raw = {}
            lowered: list[tuple[bytes, bytes]] = []
            for name, value in lines:
                name = _lowercase(name)
                lowered.append((name, value))
                raw.setdefault(name, value)
            lines = lowered
        self.repeats = len(raw) != len(lines)
        self._lines = lines
        self.raw = raw  # each name's first value as the server sent it (untrimmed), by lowercase name

    def __getitem__(self, key: str) -> str:
        value = self.raw.get(_key(key))
        if value is None:
            raise KeyError(key)
        return text(value)

    def get(self, key: str, default: Any = None) -> Any:  # the Mapping mixin's is slower: hot path
        value = self.raw.get(_KEYS.get(key) or _key(key))  # `_key`, its kept keys inline
        return default if value is None else value.decode("latin-1").strip(" \t")

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and _key(key) in self.raw

    def __iter__(self) -> Iterator[str]:
        return (name.decode("latin-1") for name in self.raw)

    def __len__(self) -> int:
        return len(self.raw)

    def getlist(self, key: str) -> list[str]:
        name = _key(key)
        return [text(value) for line, value in self._lines if line == name]

    def raw_items(self) -> list[tuple[str, str]]:
        """Every header line in arrival order, repeats included."""
        return [(name.decode("latin-1"), text(value)) for name, value in self._lines]

    def __repr__(self) -> str:
        # Never show values: the Authorization header is among them.
        return f"Headers({sorted(self)!r})"


def text(value: bytes) -> str:
    """A header value as `Headers` reads it: latin-1, without the optional whitespace around it."""
    return value.decode("latin-1").strip(" \t")


def _lowercase(name: bytes) -> bytes:
    """A header name lowercased as its latin-1 text is (a server that sends uppercase names)."""
    return name.decode("latin-1").lower().encode("latin-1")


# Lookup keys as the names they address, kept: callers ask for the same few names on every request.
# Bounded: keys past the bound (a handler may ask for any) are converted each time.
_KEYS: Final[dict[str, bytes]] = {}
_KEYS_KEPT: Final = 256
# What a key outside latin-1 addresses: nothing (no name a server sends decodes to it). Not bytes, so
# it equals no name.
_NO_NAME: Final = cast(bytes, object())


def _key(key: str) -> bytes:
    name = _KEYS.get(key)
    if name is None:
        try:
            name = key.lower().encode("latin-1")
        except UnicodeEncodeError:
            name = _NO_NAME
        if len(_KEYS) < _KEYS_KEPT:
            _KEYS[key] = name
    return name


def era_of(version_header: str | None) -> tuple[Era, str]:
    """Pick the protocol era from `MCP-Protocol-Version`; raise 400 for a version nobody speaks.

    Returns the era and the version the header names (or the 2025-03-26 default when absent).
    """
    if version_header is None:
        return "legacy", DEFAULT_LEGACY_VERSION
    if version_header in MODERN_VERSIONS:
        return "modern", version_header
    if version_header in LEGACY_VERSIONS:
        return "legacy", version_header
    raise ProtocolError(
        400,
        "Unsupported protocol version",
        code=UNSUPPORTED_PROTOCOL_VERSION,
        # The sessionless versions, as `server/discover` lists them; legacy clients negotiate theirs
        # through `initialize` and never see this error.
        data={"supported": list(MODERN_VERSIONS), "requested": version_header[:64]},
        reason="unsupported MCP-Protocol-Version",
    )


# `era_of` of an `MCP-Protocol-Version` line as sent (`Headers.raw`; None: absent), for the values
# clients send; `era_of_raw` falls back on `era_of` for anything else (padded, unknown).
ERA_OF_RAW: Final[dict[bytes | None, tuple[Era, str]]] = {
    None: ("legacy", DEFAULT_LEGACY_VERSION),
    **{version.encode(): ("legacy", version) for version in LEGACY_VERSIONS},
    **{version.encode(): ("modern", version) for version in MODERN_VERSIONS},
}


def era_of_raw(value: bytes | None) -> tuple[Era, str]:
    """`era_of` of the header line as the server sent it (`Headers.raw`)."""
    known = ERA_OF_RAW.get(value)
    return known if known is not None else era_of(text(value) if value is not None else None)


@functools.lru_cache(maxsize=256)
def accepts_raw(accept_line: bytes | None) -> tuple[bool, bool]:
    """`accepts` of the header line as the server sent it (`Headers.raw`), cached as sent."""
    return accepts(text(accept_line) if accept_line is not None else None)


@functools.lru_cache(maxsize=256)
def accepts(accept_header: str | None) -> tuple[bool, bool]:
    """Whether an Accept header admits (application/json, text/event-stream).

    Wildcards count (`*/*`, `application/*`, `text/*`), and a `q=0` entry refuses its type.
    """
    if not accept_header:
        return False, False
    json_ok = sse_ok = False
    for item in accept_header.split(","):
        media, _, params = item.partition(";")
        media = media.strip().lower()
        # Parameter names are case-insensitive (RFC 9110 5.6.6): `Q=0` refuses too.
        if "q=0" in params.replace(" ", "").lower() and _is_zero_q(params):
            continue
        if media in ("*/*", "application/*", "application/json"):
            json_ok = True
        if media in ("*/*", "text/*", "text/event-stream"):
            sse_ok = True
    return json_ok, sse_ok


def _is_zero_q(params: str) -> bool:
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value.strip()) == 0.0
            except ValueError:
                return False
    return False


def is_json_content_type_raw(content_type: bytes | None) -> bool:
    """`is_json_content_type` of the header line as the server sent it (`Headers.raw`)."""
    if content_type == JSON_CONTENT_TYPE:  # as nearly every client sends it
        return True
    return is_json_content_type(text(content_type) if content_type is not None else None)


def is_json_content_type(content_type: str | None) -> bool:
    """`application/json` with any parameters (`charset=utf-8`), case-insensitive."""
    if content_type is None:
        return False
    if content_type == "application/json":  # as nearly every client sends it
        return True
    return content_type.partition(";")[0].strip().lower() == "application/json"


_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")


def is_visible_ascii(value: str, *, max_length: int = 256) -> bool:
    """Spec: session ids (and anything we echo back into a header) use only visible ASCII, 0x21-0x7E."""
    return len(value) <= max_length and _VISIBLE_ASCII.fullmatch(value) is not None


def check_session_id(value: str) -> str:
    """A session id a client sent: malformed ones are refused before any table lookup."""
    if not is_visible_ascii(value):
        raise ProtocolError(400, "Bad Request: malformed Mcp-Session-Id header", reason="malformed session id")
    return value


def missing_session() -> ProtocolError:
    return ProtocolError(400, "Bad Request: Mcp-Session-Id header is required", reason="missing session id")


def session_not_found(request_id: str | int | None = None) -> ProtocolError:
    # Unknown, expired, deleted or another credential's session all look the same: leaking which
    # would let a caller probe for live session ids.
    return ProtocolError(404, "Session not found", code=INVALID_REQUEST, request_id=request_id)


def method_not_allowed(allow: str) -> ProtocolError:
    return ProtocolError(
        405, "Method Not Allowed", headers=[(b"allow", allow.encode())], reason="method not allowed on endpoint"
    )


def endpoint_matches(path: str, root_path: str, endpoint: str) -> bool:
    """Whether a request path addresses the endpoint: bare path and trailing slash both, never a redirect.

    ASGI puts the mount point in `root_path` and the full path in `path`; servers and frameworks
    disagree on whether `path` includes `root_path`, so both shapes are accepted.
    """
    # Only a whole-segment prefix is the mount point: under root "/m", "/mcp" is not "/m" + "cp".
    root = root_path.rstrip("/")
    if root and (path == root or path.startswith(root + "/")):
        path = path[len(root) :]
    if path.endswith("/") and len(path) > 1:
        path = path[:-1]
    return path == endpoint or (endpoint == "/" and path == "")


def normalize_endpoint(endpoint: str) -> str:
    endpoint = "/" + endpoint.strip("/")
    return endpoint
