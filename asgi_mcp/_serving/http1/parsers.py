"""The two head parsers behind one interface: h11 (pure Python) and httptools (llhttp), when installed.

Each gets one complete head (see `head.find_head`) and returns method, target, version and
lower-cased headers; the shared checks in `head.py` run on that output. Where the two differ they are
made to agree: control characters in field values are accepted as h11 does (but NUL, refused by both;
CR and LF never appear but as CRLF, see `check_raw_head`), so llhttp's value check is relaxed;
repeated or listed Content-Length, which h11 silently merges, is refused for both; an upgrade never
happens with httptools.
"""

from __future__ import annotations

import re
from typing import Final, Protocol

from ..._core.errors import ConfigurationError
from .errors import HttpRefusal
from .head import Headers, RequestHead, check_raw_head, finish_head

__all__ = ["HeadParser", "make_parser", "parser_names"]

_LENGTH_LINE: Final = re.compile(rb"\r\ncontent-length:[ \t]*([^\r]*)", re.IGNORECASE)


class HeadParser(Protocol):
    name: str

    def parse(self, head: bytes) -> RequestHead: ...


class H11Parser:
    name = "h11"

    def __init__(self, max_headers: int) -> None:
        import h11

        self._h11 = h11
        self.max_headers = max_headers

    def parse(self, head: bytes) -> RequestHead:
        check_raw_head(head, self.max_headers)
        lengths = _LENGTH_LINE.findall(head)
        if len(lengths) > 1 or (lengths and not lengths[0].strip().isdigit()):
            raise HttpRefusal(400, "invalid Content-Length")
        h11 = self._h11
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=len(head) + 1)
        connection.receive_data(head)
        try:
            event = connection.next_event()
        except h11.RemoteProtocolError:
            raise HttpRefusal(400, "malformed request") from None
        if not isinstance(event, h11.Request):  # pragma: no cover - a complete head always parses to one
            raise HttpRefusal(400, "malformed request")
        headers: Headers = [(bytes(name), bytes(value)) for name, value in event.headers]
        return finish_head(bytes(event.method), bytes(event.target), bytes(event.http_version), headers)


class _Sink:
    """What llhttp reports of the head being parsed: its target and its headers, names lower-cased.

    One per adapter, reset for each head: a head is parsed in one synchronous call. No
    `on_headers_complete`: a head that ends in its blank line and parses has completed."""

    __slots__ = ("headers", "url")

    def __init__(self) -> None:
        self.url = b""
        self.headers: Headers = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))


class HttptoolsParser:
    name = "httptools"

    def __init__(self, max_headers: int) -> None:
        import httptools

        self._new_parser = httptools.HttpRequestParser
        self._upgrade = httptools.HttpParserUpgrade
        self._error = httptools.HttpParserError
        self._sink = _Sink()
        self.max_headers = max_headers

    def parse(self, head: bytes) -> RequestHead:
        check_raw_head(head, self.max_headers)
        sink = self._sink
        sink.url = b""
        headers: Headers = []
        sink.headers = headers
        parser = self._new_parser(sink)
        parser.set_dangerous_leniencies(lenient_headers=True)  # control characters in values, as h11
        try:
            parser.feed_data(head)
        except self._upgrade:
            pass  # the head is complete; upgrades are not offered, the request is served as HTTP
        except self._error:
            raise HttpRefusal(400, "malformed request") from None
        method: bytes = parser.get_method()
        # The request line llhttp accepted ends in `HTTP/x.y`: the version is its last three bytes
        # (cheaper than `get_http_version()`, which formats a string).
        line_end = head.find(b"\r\n")
        return finish_head(method, sink.url, head[line_end - 3 : line_end], headers)


def parser_names() -> list[str]:
    """The parsers importable here, fastest first."""
    names: list[str] = []
    for name in ("httptools", "h11"):
        try:
            __import__(name)
        except ImportError:
            continue
        names.append(name)
    return names


def make_parser(choice: str, max_headers: int) -> HeadParser:
    """httptools when installed (or asked for), else h11."""
    if choice == "auto":
        available = parser_names()
        if not available:
            raise ConfigurationError("the built-in server needs h11 or httptools: pip install 'asgi-mcp[server]'")
        choice = available[0]
    if choice == "httptools":
        return HttptoolsParser(max_headers)
    return H11Parser(max_headers)
