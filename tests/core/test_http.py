"""Sans-IO header logic: era selection, Accept negotiation, endpoint matching, the Headers view."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgi_mcp import Headers, ProtocolError
from asgi_mcp._core import http
from asgi_mcp._core.errors import UNSUPPORTED_PROTOCOL_VERSION
from asgi_mcp._core.http import (
    LEGACY_VERSIONS,
    MODERN_VERSIONS,
    check_session_id,
    endpoint_matches,
    era_of,
    is_json_content_type,
    normalize_endpoint,
)
from asgi_mcp._core.http import accepts as accepts_header


class TestEraOf:
    def test_absent_header_is_legacy_2025_03_26(self) -> None:
        assert era_of(None) == ("legacy", "2025-03-26")

    @pytest.mark.parametrize("version", LEGACY_VERSIONS)
    def test_legacy_versions(self, version: str) -> None:
        assert era_of(version) == ("legacy", version)

    @pytest.mark.parametrize("version", MODERN_VERSIONS)
    def test_modern_versions(self, version: str) -> None:
        assert era_of(version) == ("modern", version)

    @pytest.mark.parametrize("bogus", ["1999-01-01", "", "2025-11-25 ", "latest", "x" * 500])
    def test_unsupported_version_is_400_minus_32022(self, bogus: str) -> None:
        with pytest.raises(ProtocolError) as caught:
            era_of(bogus)
        error = caught.value
        assert error.status == 400
        assert error.code == UNSUPPORTED_PROTOCOL_VERSION
        body = error.error_body()
        assert body is not None
        data = body["error"]["data"]
        # Names the sessionless version(s) a client can switch to (legacy ones are negotiated by initialize).
        assert set(MODERN_VERSIONS) <= set(data["supported"])
        # The echoed value is bounded: a huge header does not become a huge answer.
        assert data["requested"] == bogus[:64]


class TestAccepts:
    @pytest.mark.parametrize(
        ("header", "expected"),
        [
            (None, (False, False)),
            ("", (False, False)),
            ("application/json", (True, False)),
            ("text/event-stream", (False, True)),
            ("application/json, text/event-stream", (True, True)),
            ("text/event-stream;q=0.9,application/json", (True, True)),
            ("*/*", (True, True)),
            ("application/*", (True, False)),
            ("text/*", (False, True)),
            ("APPLICATION/JSON, Text/Event-Stream", (True, True)),
            ("application/json;q=0, text/event-stream", (False, True)),
            ("application/json; q=0.0, text/event-stream", (False, True)),
            ("application/json;q=0.5", (True, False)),
            ("application/json;q=0.01", (True, False)),
            ("text/html, image/png", (False, False)),
            ("application/jsonx", (False, False)),
        ],
    )
    def test_accept(self, header: str | None, expected: tuple[bool, bool]) -> None:
        assert accepts_header(header) == expected


class TestEndpointMatches:
    @pytest.mark.parametrize(
        ("path", "root_path", "endpoint", "expected"),
        [
            ("/mcp", "", "/mcp", True),
            ("/mcp/", "", "/mcp", True),
            ("/mcpx", "", "/mcp", False),
            ("/mcp/extra", "", "/mcp", False),
            ("/", "", "/mcp", False),
            ("/api/mcp", "/api", "/mcp", True),  # path includes root_path (ASGI spec)
            ("/mcp", "/api", "/mcp", True),  # path without root_path (some frameworks)
            ("/api/mcp/", "/api", "/mcp", True),
            ("/api/other", "/api", "/mcp", False),
            ("/", "", "/", True),
            ("", "", "/", True),
            ("/api", "/api", "/", True),
            ("/x", "", "/", False),
        ],
    )
    def test_matches(self, path: str, root_path: str, endpoint: str, expected: bool) -> None:
        assert endpoint_matches(path, root_path, endpoint) is expected

    @pytest.mark.parametrize(("given", "normal"), [("mcp", "/mcp"), ("/mcp/", "/mcp"), ("/", "/"), ("/a/b/", "/a/b")])
    def test_normalize(self, given: str, normal: str) -> None:
        assert normalize_endpoint(given) == normal


class TestHeaders:
    def test_case_insensitive_first_value_wins(self) -> None:
        headers = Headers([(b"X-Thing", b"one"), (b"x-thing", b"two"), (b"Accept", b"*/*")])
        assert headers["x-thing"] == headers["X-THING"] == headers.get("X-Thing") == "one"
        assert headers.getlist("X-THING") == ["one", "two"]
        assert "ACCEPT" in headers
        assert 42 not in headers
        assert len(headers) == 2
        assert sorted(headers) == ["accept", "x-thing"]
        assert headers.raw_items() == [("x-thing", "one"), ("x-thing", "two"), ("accept", "*/*")]
        assert headers.get("missing") is None
        with pytest.raises(KeyError):
            headers["missing"]

    def test_latin1_values_survive(self) -> None:
        headers = Headers([(b"x-name", "caf\xe9".encode("latin-1"))])
        assert headers["x-name"] == "caf\xe9"

    def test_values_lose_surrounding_whitespace_whatever_the_server(self) -> None:
        # httptools hands values over untrimmed; h11 trims them. Inner whitespace stays.
        headers = Headers([(b"mcp-protocol-version", b" \t2025-11-25\t "), (b"x-list", b"\ta, b ")])
        assert headers["mcp-protocol-version"] == "2025-11-25"
        assert headers.getlist("x-list") == ["a, b"]
        assert headers.raw_items() == [("mcp-protocol-version", "2025-11-25"), ("x-list", "a, b")]

    def test_keys_read_the_same_once_the_converted_ones_are_kept_and_past_their_bound(self) -> None:
        # Lookup keys are kept converted for the next request, up to a bound: past it, new keys are
        # converted each time, never kept, and read the same.
        invented = [(f"x-invented-{n}".encode(), b"v") for n in range(2 * http._KEYS_KEPT)]
        for _ in range(2):
            headers = Headers([(b"content-type", b"application/json"), *invented])
            assert headers["Content-Type"] == "application/json"
            for n in range(2 * http._KEYS_KEPT):
                assert headers.get(f"X-Invented-{n}") == "v"
            assert len(headers) == 1 + len(invented)
        assert len(http._KEYS) == http._KEYS_KEPT

    def test_keys_outside_latin1_find_nothing(self) -> None:
        headers = Headers([(b"x-caf\xe9", b"1"), (b"k", b"2")])
        assert headers["X-CAF\xc9"] == "1"  # latin-1 names lowercase as their text does
        assert "x-caf\u20ac" not in headers
        assert headers.get("\u20ac", "none") == "none"
        assert headers.getlist("\u20ac") == []
        assert headers["\u212a"] == "2"  # the Kelvin sign lowercases to "k", as str.lower() says

    def test_uppercase_and_repeated_names_from_a_server(self) -> None:
        # ASGI servers send lowercase names; one that does not still gets a case-insensitive view, and
        # `raw` (the transport's reads) has lowercase names too.
        headers = Headers([(b"Content-Type", b" application/json "), (b"X-A", b"1"), (b"x-a", b"2")])
        assert headers.raw == {b"content-type": b" application/json ", b"x-a": b"1"}
        assert headers.repeats
        assert not Headers([(b"content-type", b"application/json")]).repeats
        assert headers["content-type"] == "application/json"
        assert Headers(iter([(b"a", b"1")]))["A"] == "1"  # any iterable of lines

    def test_repr_never_shows_values(self) -> None:
        headers = Headers([(b"authorization", b"Bearer top-secret")])
        assert "top-secret" not in repr(headers)
        assert "authorization" in repr(headers)


class TestMisc:
    @pytest.mark.parametrize(
        ("value", "ok"),
        [
            ("application/json", True),
            ("Application/JSON; charset=utf-8", True),
            ("application/json-seq", False),
            ("text/plain", False),
            (None, False),
        ],
    )
    def test_json_content_type(self, value: str | None, ok: bool) -> None:
        assert is_json_content_type(value) is ok

    @pytest.mark.parametrize("bad", ["", "has space", "tab\there", "caf\xe9", "x" * 257, "\x7f"])
    def test_malformed_session_id_is_400(self, bad: str) -> None:
        with pytest.raises(ProtocolError) as caught:
            check_session_id(bad)
        assert caught.value.status == 400

    def test_visible_ascii_session_id_passes(self) -> None:
        value = "".join(chr(c) for c in range(0x21, 0x7F))
        assert check_session_id(value) == value


# -- the transport's reads of the lines as sent (`Headers.raw`) mirror the reads of their text ----------

_PADDING = st.sampled_from([b"", b" ", b"\t", b" \t "])
_VERSION_LINES = st.sampled_from([v.encode() for v in (*LEGACY_VERSIONS, *MODERN_VERSIONS)]) | st.binary(max_size=12)
_ACCEPT_LINES = st.sampled_from(
    [b"application/json, text/event-stream", b"*/*", b"text/event-stream;q=0", b"application/*;Q=0, text/*", b""]
)
_CONTENT_TYPE_LINES = st.sampled_from(
    [b"application/json", b"Application/JSON; charset=utf-8", b"application/json-seq", b"text/plain", b""]
)


def _padded(lines: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes | None]:
    return st.none() | st.tuples(_PADDING, lines | st.binary(max_size=12), _PADDING).map(b"".join)


def _outcome(read: Callable[[], object]) -> object:
    try:
        return read()
    except ProtocolError as error:
        return (error.status, error.code, error.error_body())


@given(_padded(_VERSION_LINES))
def test_era_of_raw_is_era_of_the_text(line: bytes | None) -> None:
    as_text = http.text(line) if line is not None else None
    assert _outcome(lambda: http.era_of_raw(line)) == _outcome(lambda: era_of(as_text))
    if line in http.ERA_OF_RAW:  # what the app reads inline
        assert http.ERA_OF_RAW[line] == era_of(as_text)


@given(_padded(_ACCEPT_LINES))
def test_accepts_raw_is_accepts_of_the_text(line: bytes | None) -> None:
    assert http.accepts_raw(line) == accepts_header(http.text(line) if line is not None else None)


@given(_padded(_CONTENT_TYPE_LINES))
def test_is_json_content_type_raw_is_that_of_the_text(line: bytes | None) -> None:
    expected = is_json_content_type(http.text(line) if line is not None else None)
    assert http.is_json_content_type_raw(line) is expected
    if line == http.JSON_CONTENT_TYPE:  # what the app compares inline
        assert expected
