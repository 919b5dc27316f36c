"""JSON-RPC classification of POST bodies, and precise answers to malformed input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgi_mcp import ProtocolError
from asgi_mcp._core.errors import INVALID_REQUEST, PARSE_ERROR
from asgi_mcp._core.jsonrpc import classify, dumps, error_message, parse_body


def parse(obj: Any) -> Any:
    return parse_body(json.dumps(obj).encode())


class TestClassification:
    def test_request(self) -> None:
        message = parse({"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": {"cursor": "c"}})
        assert (message.kind, message.id, message.method, message.params) == (
            "request",
            7,
            "tools/list",
            {"cursor": "c"},
        )

    def test_request_with_string_id_and_no_params(self) -> None:
        message = parse({"jsonrpc": "2.0", "id": "abc", "method": "ping"})
        assert (message.kind, message.id, message.params) == ("request", "abc", None)

    def test_notification(self) -> None:
        message = parse({"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert (message.kind, message.id, message.method) == ("notification", None, "notifications/initialized")

    def test_response(self) -> None:
        message = parse({"jsonrpc": "2.0", "id": 1, "result": {}})
        assert (message.kind, message.id) == ("response", 1)

    def test_error_response(self) -> None:
        message = parse({"jsonrpc": "2.0", "id": 1, "error": {"code": -1, "message": "no"}})
        assert (message.kind, message.id) == ("error", 1)

    def test_error_with_null_id_is_legal(self) -> None:
        message = parse({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "bad"}})
        assert (message.kind, message.id) == ("error", None)

    def test_raw_is_kept(self) -> None:
        obj = {"jsonrpc": "2.0", "id": 1, "result": {"x": [1, 2]}}
        assert parse(obj).raw == obj


class TestMalformed:
    @pytest.mark.parametrize(
        "body",
        [b"{", b"", b"not json", b'{"a": 1} trailing', b"\xff\xfe", b"[1, 2", b"1" * 5000],
    )
    def test_not_json_is_parse_error(self, body: bytes) -> None:
        with pytest.raises(ProtocolError) as caught:
            parse_body(body)
        assert (caught.value.status, caught.value.code) == (400, PARSE_ERROR)

    def test_deep_nesting_is_parse_error_not_a_crash(self) -> None:
        with pytest.raises(ProtocolError) as caught:
            parse_body(b"[" * 100_000 + b"]" * 100_000)
        assert caught.value.code == PARSE_ERROR

    def test_batch_is_refused(self) -> None:
        with pytest.raises(ProtocolError) as caught:
            parse([{"jsonrpc": "2.0", "id": 1, "method": "ping"}])
        assert (caught.value.status, caught.value.code) == (400, INVALID_REQUEST)
        assert "Batch" in caught.value.message

    @pytest.mark.parametrize("scalar", [1, "x", None, True])
    def test_non_object_is_invalid_request(self, scalar: Any) -> None:
        with pytest.raises(ProtocolError) as caught:
            parse(scalar)
        assert caught.value.code == INVALID_REQUEST

    @pytest.mark.parametrize(
        ("obj", "echoed_id"),
        [
            ({"id": 1, "method": "ping"}, 1),  # no jsonrpc
            ({"jsonrpc": "1.0", "id": 1, "method": "ping"}, 1),
            ({"jsonrpc": "2.0", "id": 1.5, "method": "ping"}, None),
            ({"jsonrpc": "2.0", "id": True, "method": "ping"}, None),
            ({"jsonrpc": "2.0", "id": None, "method": "ping"}, None),
            ({"jsonrpc": "2.0", "id": [1], "method": "ping"}, None),
            ({"jsonrpc": "2.0", "id": 2, "method": ""}, 2),
            ({"jsonrpc": "2.0", "id": 2, "method": 5}, 2),
            ({"jsonrpc": "2.0", "id": 3, "method": "x", "params": [1, 2]}, 3),
            ({"jsonrpc": "2.0", "id": 3, "method": "x", "params": "p"}, 3),
            ({"jsonrpc": "2.0"}, None),
            ({"jsonrpc": "2.0", "id": 4}, 4),
            ({"jsonrpc": "2.0", "id": 4, "result": {}, "error": {"code": 1, "message": ""}}, 4),
            ({"jsonrpc": "2.0", "id": 4, "error": "boom"}, 4),
        ],
    )
    def test_invalid_request_echoes_a_readable_id(self, obj: dict[str, Any], echoed_id: Any) -> None:
        with pytest.raises(ProtocolError) as caught:
            classify(obj)
        error = caught.value
        assert (error.status, error.code, error.request_id) == (400, INVALID_REQUEST, echoed_id)
        body = error.error_body()
        assert body is not None
        assert body["id"] == echoed_id
        assert body["jsonrpc"] == "2.0"


@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_escape_as_anything_but_protocol_errors(body: bytes) -> None:
    outcome: object
    try:
        outcome = parse_body(body).kind
    except ProtocolError as error:
        outcome = (error.status, error.code)
    assert outcome in {"request", "notification", "response", "error", (400, PARSE_ERROR), (400, INVALID_REQUEST)}


_JSON_TEXT = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
).map(json.dumps)


@given(
    st.one_of(
        _JSON_TEXT,
        st.tuples(
            st.sampled_from(["", " ", "\t\n", "\r ", "\ufeff", "\x0c", "\xa0"]), _JSON_TEXT, st.text(max_size=3)
        ).map("".join),
        st.text(max_size=12),
    )
)
def test_decoding_accepts_and_refuses_exactly_what_json_loads_does(text: str) -> None:
    """The body is decoded by the scanner `json.loads` uses, without its wrappers: the same values,
    the same refusals, whatever surrounds the value (JSON whitespace, other spaces, trailing data)."""
    try:
        expected: object = json.loads(text)
    except ValueError:
        expected = ValueError
    decoded: object
    try:
        decoded = parse_body(text.encode()).raw
    except ProtocolError as error:
        # A parse error is a refusal of the text; any other error, of the value it holds.
        decoded = ValueError if error.code == PARSE_ERROR else (expected if expected is not ValueError else "value")
    # NaN is the one value unequal to itself: compare the texts they encode to.
    assert json.dumps(decoded, default=repr) == json.dumps(expected, default=repr)


def test_dumps_is_compact_and_keeps_unicode() -> None:
    assert dumps({"a": "é", "b": [1, 2]}) == '{"a":"é","b":[1,2]}'
    with pytest.raises(ValueError, match="not JSON compliant"):
        dumps({"nan": float("nan")})


def test_error_message_shape() -> None:
    assert error_message(1, -32000, "m") == {"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, "message": "m"}}
    assert error_message(None, -1, "m", {"d": 1})["error"]["data"] == {"d": 1}


_STANDARD_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_ANSWER_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.builds(object),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=6) | st.integers() | st.none() | st.booleans(), children, max_size=4)
    ),
    max_leaves=12,
)


def _encoded(encode: Any, value: Any) -> object:
    try:
        return encode(value)
    except (ValueError, TypeError, RecursionError) as error:
        return (type(error), str(error))


@given(_ANSWER_VALUES)
def test_dumps_is_the_standard_encoder(value: Any) -> None:
    """`dumps` calls the C encoder directly: the same text as the encoder it replaces, the same
    refusals (NaN, objects JSON cannot hold), and the text reads back as the value."""
    text = _encoded(dumps, value)
    assert text == _encoded(_STANDARD_ENCODER.encode, value)
    if isinstance(text, str) and "NaN" not in text and "Infinity" not in text:
        assert json.dumps(json.loads(text), ensure_ascii=False, separators=(",", ":")) == text


def test_dumps_refuses_cycles_and_deep_nesting_as_the_standard_encoder_does() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    loop: dict[str, Any] = {}
    loop["self"] = {"up": loop}
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    for value in (cycle, loop, deep):
        assert _encoded(dumps, value) == _encoded(_STANDARD_ENCODER.encode, value)
    assert _encoded(dumps, cycle) == (ValueError, "Circular reference detected")
