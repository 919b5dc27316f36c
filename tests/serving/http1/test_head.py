"""The raw-head checks both parsers share (`check_raw_head`) and the version httptools' adapter reads.

The over-the-wire refusals are in test_differential.py and test_limits.py; here the one-pass check
of a sound head is held against the seven plain checks it stands for, on heads made of the bytes
that matter (CR, LF, NUL, space, tab) and a few others.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgi_mcp._serving.http1.errors import HttpRefusal
from asgi_mcp._serving.http1.head import check_raw_head
from asgi_mcp._serving.http1.parsers import make_parser, parser_names


def refusal_by_plain_checks(head: bytes, max_headers: int) -> tuple[int, str] | None:
    """What the checks say, one condition at a time, in the order they are reported."""
    lines = head.count(b"\r\n")
    if head.count(b"\r") != lines or head.count(b"\n") != lines:
        return 400, "bare CR or LF in request head"
    if b"\x00" in head:
        return 400, "NUL in request head"
    if b"\n " in head or b"\n\t" in head:
        return 400, "obsolete line folding"
    if lines - 2 > max_headers:
        return 431, "too many request headers"
    return None


def refusal_by_check_raw_head(head: bytes, max_headers: int) -> tuple[int, str] | None:
    try:
        check_raw_head(head, max_headers)
    except HttpRefusal as refusal:
        return refusal.status, refusal.reason
    return None


pieces = st.sampled_from([b"\r\n", b"\r", b"\n", b"\x00", b" ", b"\t", b"a", b":", b"\r\n ", b"\r\n\t", b"x: y"])


@given(body=st.lists(pieces, max_size=24).map(b"".join), max_headers=st.integers(0, 6))
def test_check_raw_head_says_what_the_plain_checks_say(body: bytes, max_headers: int) -> None:
    head = b"GET / HTTP/1.1\r\n" + body + b"\r\n\r\n"
    assert refusal_by_check_raw_head(head, max_headers) == refusal_by_plain_checks(head, max_headers)


def test_a_sound_head_passes_and_each_fault_is_named() -> None:
    sound = b"POST /mcp HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\n"
    assert refusal_by_check_raw_head(sound, 2) is None
    assert refusal_by_check_raw_head(sound.replace(b"host", b"ho\rst"), 2) == (400, "bare CR or LF in request head")
    assert refusal_by_check_raw_head(sound.replace(b"host", b"ho\nst"), 2) == (400, "bare CR or LF in request head")
    assert refusal_by_check_raw_head(sound.replace(b"t\r\n", b"\x00\r\n"), 2) == (400, "NUL in request head")
    assert refusal_by_check_raw_head(sound.replace(b"\r\ncontent", b"\r\n content"), 2) == (
        400,
        "obsolete line folding",
    )
    assert refusal_by_check_raw_head(sound, 1) == (431, "too many request headers")


@pytest.mark.parametrize("parser", parser_names())
@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_both_parsers_read_the_version_of_the_request_line(parser: str, version: str) -> None:
    head = make_parser(parser, 10).parse(f"GET /a?b HTTP/{version}\r\nhost: t\r\n\r\n".encode())
    assert (head.http_version, head.raw_path, head.query_string) == (version, b"/a", b"b")
