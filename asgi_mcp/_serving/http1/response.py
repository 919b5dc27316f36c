"""Response heads written by the server itself: status lines, the app's headers checked, the Date header."""

from __future__ import annotations

import http
import re
import time
from collections.abc import Iterable
from typing import Final

__all__ = ["ResponseHead", "date_header", "encode_response_head", "plain_response"]

_STATUS_LINES: Final = {
    status.value: b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode("ascii")) for status in http.HTTPStatus
}
# A token (RFC 9110 §5.6.2) and a field value without CR, LF or other control characters but HTAB.
_NAME: Final = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_VALUE: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# Checked header lines, by (name, value), for every header but the framing ones the server reads
# itself; bounded (cleared when full), so varied values cost their check, not memory.
_checked_lines: dict[tuple[bytes, bytes], bytes] = {}
_CHECKED_LINES_MAX: Final = 1024
_date_second = -1
_date_line = b""


def date_header() -> bytes:
    """`date: ...\\r\\n`, formatted once a second."""
    global _date_second, _date_line
    now = int(time.time())
    if now != _date_second:
        _date_second = now
        _date_line = b"date: " + time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)).encode() + b"\r\n"
    return _date_line


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d \r\n" % status


class ResponseHead:
    """The app's response head, checked; the framing headers are the server's to add."""

    __slots__ = ("close", "content_length", "lines", "status")

    def __init__(self, status: int, lines: bytes, content_length: int | None, close: bool) -> None:
        self.status = status
        self.lines = lines
        self.content_length = content_length
        self.close = close


def encode_response_head(status: object, headers: Iterable[tuple[bytes, bytes]]) -> ResponseHead:
    """Raises `ValueError` on a status or header the app must not send (it would split the response)."""
    if not isinstance(status, int) or not 100 <= status <= 999:
        raise ValueError(f"invalid response status {status!r}")
    lines = bytearray()
    content_length: int | None = None
    close = False
    for name, value in headers:
        if name == b"content-length" and value.isdigit():
            # The one header of nearly every response whose line cannot be cached (its value varies):
            # a name as the server would write it and a value of digits need no other check.
            content_length = int(value)
            lines += b"content-length: " + value + b"\r\n"
            continue
        cacheable = type(name) is bytes and type(value) is bytes
        line = _checked_lines.get((name, value)) if cacheable else None
        if line is not None:  # a header already checked (an app sends the same ones over and over)
            lines += line
            continue
        if not _NAME.fullmatch(name) or _BAD_VALUE.search(value):
            raise ValueError("invalid response header")
        lower = name.lower()
        if lower == b"content-length":
            if not value.strip().isdigit():
                raise ValueError("invalid Content-Length in the response")
            content_length = int(value)
            cacheable = False  # the server reads its value
        elif lower == b"transfer-encoding":
            continue  # the server frames the body itself
        elif lower == b"connection" and b"close" in value.lower():
            close = True
            continue  # said again by the server when it closes
        line = name + b": " + value + b"\r\n"
        if cacheable:
            if len(_checked_lines) >= _CHECKED_LINES_MAX:
                _checked_lines.clear()
            _checked_lines[(name, value)] = line
        lines += line
    return ResponseHead(status, bytes(lines), content_length, close)


def plain_response(status: int, reason: str) -> bytes:
    """A complete text/plain response that closes the connection (the server's own refusals)."""
    body = reason.encode("ascii") + b"\n"
    return (
        status_line(status)
        + b"content-type: text/plain; charset=utf-8\r\n"
        + b"content-length: %d\r\n" % len(body)
        + b"connection: close\r\n"
        + date_header()
        + b"\r\n"
        + body
    )
