"""Request heads: finding one in the buffer, the checks both parsers share, and what the server needs of it.

Both parser adapters get a complete head only, and everything that decides how a request is framed
(Content-Length, Transfer-Encoding, Host, version, method) is checked here, once, on their output: so
h11 and httptools refuse the same requests with the same status. Refused as request smuggling: bare
CR or LF, obs-fold, Content-Length with Transfer-Encoding, duplicate or listed Content-Length, any
Transfer-Encoding but a single `chunked`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, NoReturn

from .errors import HttpRefusal

__all__ = ["RequestHead", "check_raw_head", "find_head", "finish_head"]

Headers = list[tuple[bytes, bytes]]

# What llhttp (httptools) knows; h11 would take any token, and both must agree.
KNOWN_METHODS: Final = frozenset(
    b"GET HEAD POST PUT DELETE OPTIONS TRACE PATCH COPY LOCK MKCOL MOVE PROPFIND PROPPATCH SEARCH UNLOCK "
    b"BIND REBIND UNBIND ACL REPORT MKACTIVITY CHECKOUT MERGE M-SEARCH NOTIFY SUBSCRIBE UNSUBSCRIBE PURGE "
    b"MKCALENDAR LINK UNLINK SOURCE QUERY".split()
)
_MAX_LENGTH_DIGITS: Final = 18
_OBS_FOLD: Final = re.compile(rb"\n[ \t]")  # a field line that continues the one before (RFC 9112 §5.2)
# The request headers that decide framing and connection handling, by lower-case name.
_HOST: Final = 1
_CONTENT_LENGTH: Final = 2
_TRANSFER_ENCODING: Final = 3
_CONNECTION: Final = 4
_EXPECT: Final = 5
_UPGRADE: Final = 6
_FRAMING_HEADERS: Final = {
    b"host": _HOST,
    b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"connection": _CONNECTION,
    b"expect": _EXPECT,
    b"upgrade": _UPGRADE,
}


@dataclass(slots=True)
class RequestHead:
    method: str
    raw_path: bytes
    query_string: bytes
    http_version: str  # "1.1" or "1.0"
    headers: Headers
    content_length: int  # 0 when chunked or no body
    chunked: bool
    keep_alive: bool
    expect_continue: bool


def find_head(buffer: bytearray, max_request_line: int, max_header_bytes: int) -> int | None:
    """The end of the head at the start of `buffer` (after its blank line), or None while incomplete.

    Empty lines before a request are dropped (RFC 9112 §2.2). Raises 414 or 431 as soon as the
    request line or the head is over its limit, complete or not.
    """
    while buffer.startswith(b"\r\n"):
        del buffer[:2]
    end = buffer.find(b"\r\n\r\n")
    line_end = buffer.find(b"\r\n")
    if (line_end < 0 and len(buffer) > max_request_line) or line_end > max_request_line:
        raise HttpRefusal(414, "request line too long")
    if end < 0:
        if len(buffer) > max_header_bytes:
            raise HttpRefusal(431, "request header too large")
        if b"\n\n" in buffer:
            raise HttpRefusal(400, "bare LF in request head")
        return None
    end += 4
    if end > max_header_bytes:
        raise HttpRefusal(431, "request header too large")
    return end


def check_raw_head(head: bytes, max_headers: int) -> None:
    """Line endings, NUL and folding, before any parser sees the head.

    A sound head has one CR and one LF per CRLF and no NUL, so removing CR, LF and NUL from it
    removes exactly two bytes per CRLF; any other head takes the precise checks, which say what is
    wrong (`_refuse_raw_head`). Three passes over a sound head instead of seven.
    """
    lines = head.count(b"\r\n")
    if len(head) - len(head.translate(None, b"\r\n\x00")) != 2 * lines or _OBS_FOLD.search(head):
        _refuse_raw_head(head, lines)
    if lines - 2 > max_headers:
        raise HttpRefusal(431, "too many request headers")


def _refuse_raw_head(head: bytes, lines: int) -> NoReturn:
    if head.count(b"\r") != lines or head.count(b"\n") != lines:
        raise HttpRefusal(400, "bare CR or LF in request head")
    if b"\x00" in head:
        raise HttpRefusal(400, "NUL in request head")
    raise HttpRefusal(400, "obsolete line folding")


def _split_target(method: bytes, target: bytes) -> bytes:
    """The path of a target not in origin form (which is the path itself)."""
    if target.startswith((b"http://", b"https://")):
        # Absolute form (RFC 9112 §3.2.2): the path is what follows the authority.
        rest = target.split(b"//", 1)[1]
        cut = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=len(rest))
        path = rest[cut:]
        return path if path[:1] == b"/" else b"/" + path
    if target == b"*" and method == b"OPTIONS":
        return target
    raise HttpRefusal(400, "invalid request target")


def finish_head(method: bytes, target: bytes, version: bytes, headers: Headers) -> RequestHead:
    """Check what the parser produced (lower-case names) and derive the framing; the same for both parsers."""
    if version not in (b"1.1", b"1.0"):
        raise HttpRefusal(400, "unsupported HTTP version")
    if method not in KNOWN_METHODS:
        if method == b"CONNECT":
            raise HttpRefusal(501, "CONNECT is not supported")
        raise HttpRefusal(400, "unknown method")
    if not target.isascii():
        raise HttpRefusal(400, "invalid request target")
    hosts = lengths = transfers = 0
    length_value = transfer = b""
    keep_alive = version == b"1.1"
    expect_continue = upgrade = False
    framing = _FRAMING_HEADERS.get
    for name, value in headers:
        # One lookup per header: most (content-type, accept, the app's own) frame nothing.
        kind = framing(name)
        if kind is None:
            continue
        if kind == _HOST:
            hosts += 1
        elif kind == _CONTENT_LENGTH:
            lengths += 1
            length_value = value
        elif kind == _TRANSFER_ENCODING:
            transfers += 1
            transfer = value
        elif kind == _CONNECTION:
            if b"close" in value.lower() and b"close" in [token.strip() for token in value.lower().split(b",")]:
                keep_alive = False
        elif kind == _EXPECT:
            expect_continue = value.lower() == b"100-continue" and version == b"1.1"
        else:
            upgrade = True
    if hosts > 1 or (hosts == 0 and version == b"1.1"):
        raise HttpRefusal(400, "a request needs exactly one Host header")
    chunked = False
    content_length = 0
    if transfers:
        if transfers > 1 or transfer.strip().lower() != b"chunked":
            raise HttpRefusal(400, "unsupported Transfer-Encoding")
        if lengths:
            raise HttpRefusal(400, "both Content-Length and Transfer-Encoding")
        chunked = True
    elif lengths:
        if lengths > 1 or not length_value.isdigit() or len(length_value) > _MAX_LENGTH_DIGITS:
            raise HttpRefusal(400, "invalid Content-Length")
        content_length = int(length_value)
    if upgrade and (chunked or content_length):
        raise HttpRefusal(400, "Upgrade with a request body")
    origin_form = target[:1] == b"/"  # nearly every request's: no other form to consider
    raw, _, query = (target if origin_form else _split_target(method, target)).partition(b"?")
    return RequestHead(
        method.decode("ascii"),
        raw,
        query,
        version.decode("ascii"),
        headers,
        content_length,
        chunked,
        keep_alive,
        expect_continue,
    )
