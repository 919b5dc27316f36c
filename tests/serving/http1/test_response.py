"""The app's response head as the server writes it (`encode_response_head`): framing headers read,
the rest checked once and cached, nothing that could split the response let through."""

from __future__ import annotations

import pytest

from asgi_mcp._serving.http1.response import encode_response_head


@pytest.mark.parametrize(
    ("name", "value", "line", "length"),
    [
        (b"content-length", b"180", b"content-length: 180\r\n", 180),
        (b"Content-Length", b"7", b"Content-Length: 7\r\n", 7),
        (b"content-length", b" 12 ", b"content-length:  12 \r\n", 12),
        (b"content-length", b"0", b"content-length: 0\r\n", 0),
    ],
)
def test_content_length_is_read_and_written_as_sent(name: bytes, value: bytes, line: bytes, length: int) -> None:
    head = encode_response_head(200, [(b"content-type", b"application/json"), (name, value)])
    expected_lines = b"content-type: application/json\r\n" + line
    assert (head.lines, head.content_length, head.close) == (expected_lines, length, False)


@pytest.mark.parametrize("value", [b"", b"-1", b"1.5", b"0x10", b"1\r\nx-injected: 1", b"\xd9\xa1"])
def test_a_content_length_that_is_not_digits_is_refused(value: bytes) -> None:
    with pytest.raises(ValueError, match="invalid"):
        encode_response_head(200, [(b"content-length", value)])


@pytest.mark.parametrize(
    "header",
    [
        (b"x-a", b"1\r\nx-injected: 1"),
        (b"x-a", b"nul\x00"),
        (b"x a", b"1"),
        (b"x-a\r\nx-injected", b"1"),
        (b"", b"1"),
    ],
)
def test_a_header_that_could_split_the_response_is_refused(header: tuple[bytes, bytes]) -> None:
    for _ in range(2):  # a refused line is never cached
        with pytest.raises(ValueError, match="invalid response header"):
            encode_response_head(200, [header])


def test_framing_headers_are_the_servers() -> None:
    head = encode_response_head(200, [(b"transfer-encoding", b"chunked"), (b"connection", b"Close"), (b"x-a", b"1")])
    assert (head.lines, head.content_length, head.close) == (b"x-a: 1\r\n", None, True)


@pytest.mark.parametrize("status", [99, 1000, "200", None])
def test_an_invalid_status_is_refused(status: object) -> None:
    with pytest.raises(ValueError, match="invalid response status"):
        encode_response_head(status, [])
