"""JSON-RPC classification of POST bodies, and precise answers to malformed input."""

from __future__ import annotations

import enum
import json
import math
import sys
from datetime import date, datetime, timezone
from typing import Any
from uuid import UUID

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.shared.exceptions import MCPError

from asgi_mcp import McpApp, ProtocolError
from asgi_mcp._core.errors import INVALID_REQUEST, PARSE_ERROR
from asgi_mcp._core.jsonrpc import (
    classify,
    dumps,
    dumps_bytes,
    error_message,
    parse_body,
    written_answer,
)
from tests.kit.memory import modern_post, open_session, serving
from tests.kit.messages import request


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

    @pytest.mark.parametrize(
        "params",
        [
            b'{"a": [' * 300 + b"1" + b"]}" * 300,  # deeper than pydantic-core reads
            b'{"a": NaN, "b": -Infinity, "c": 123456789012345678901234567890}',
            b'{"a": "\\ud83d\\ude00", "a": "last"}',
        ],
    )
    def test_what_json_loads_reads_is_read(self, params: bytes) -> None:
        body = b'{"jsonrpc": "2.0", "id": 1, "method": "m", "params": ' + params + b"}"
        assert json.dumps(parse_body(body).raw) == json.dumps(json.loads(body))

    def test_a_lowered_integer_digit_limit_holds_as_for_json_loads(self) -> None:
        """pydantic-core reads 4300 digits whatever `sys.set_int_max_str_digits` says."""
        body = b'{"jsonrpc": "2.0", "id": 1, "method": "m", "params": {"n": ' + b"7" * 1000 + b"}}"
        assert parse_body(body).params == {"n": int("7" * 1000)}
        previous = sys.get_int_max_str_digits()
        sys.set_int_max_str_digits(640)
        try:
            with pytest.raises(ProtocolError) as caught:
                parse_body(body)
        finally:
            sys.set_int_max_str_digits(previous)
        assert caught.value.code == PARSE_ERROR

    def test_an_escaped_lone_surrogate_is_refused_as_such(self) -> None:
        with pytest.raises(ProtocolError) as caught:
            parse_body(b'{"jsonrpc": "2.0", "id": 1, "method": "m", "params": {"a": "\\ud800"}}')
        assert (caught.value.code, caught.value.reason) == (PARSE_ERROR, "body holds an unpaired UTF-16 surrogate")

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


# A well-formed request around the generated value, so that its decoded value is compared too.
_REQUEST_OPENING = '{"jsonrpc": "2.0", "id": 1, "method": "m", "params": {"v": '
_REQUEST_TEXT = _JSON_TEXT.map(lambda value: f"{_REQUEST_OPENING}{value}}}}}")


@given(
    st.one_of(
        _JSON_TEXT,
        _REQUEST_TEXT,
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
    # NaN is the one value unequal to itself, and 1 == 1.0: compare the texts they encode to.
    assert json.dumps(decoded, default=repr) == json.dumps(expected, default=repr)


def test_dumps_is_compact_and_keeps_unicode() -> None:
    assert dumps({"a": "é", "b": [1, 2]}) == '{"a":"é","b":[1,2]}'
    assert dumps_bytes({"a": "é", "b": [1, 2]}) == '{"a":"é","b":[1,2]}'.encode()


class _Colour(enum.Enum):
    RED = "red"


def test_dumps_writes_what_json_cannot_hold_as_pydantic_json_mode_does() -> None:
    """The SDK's own wire: non-finite floats are null, and dates, UUIDs, enums, sets, tuples and
    non-string keys are written, not refused (an error's `data` holding one is still an answer)."""
    value = {
        "nan": math.nan,
        "infinities": [math.inf, -math.inf],
        "when": datetime(2026, 12, 4, 16, 30, tzinfo=timezone.utc),
        "id": UUID(int=1),
        "colour": _Colour.RED,
        "set": {3},
        "pair": (1, 2),
        7: "seven",
    }
    assert json.loads(dumps(value)) == {
        "nan": None,
        "infinities": [None, None],
        "when": "2026-12-04T16:30:00Z",
        "id": "00000000-0000-0000-0000-000000000001",
        "colour": "red",
        "set": [3],
        "pair": [1, 2],
        "7": "seven",
    }
    assert dumps(value).encode() == dumps_bytes(value)


def test_error_message_shape() -> None:
    assert error_message(1, -32000, "m") == {"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, "message": "m"}}
    assert error_message(None, -1, "m", {"d": 1})["error"]["data"] == {"d": 1}


_STANDARD_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)


def _holds_a_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(_holds_a_float(item) for item in value.values())  # pyright: ignore[reportUnknownVariableType]
    return isinstance(value, list) and any(_holds_a_float(item) for item in value)  # pyright: ignore[reportUnknownVariableType]


@given(_JSON_VALUES)
def test_dumps_of_json_values_is_the_compact_standard_text(value: Any) -> None:
    """JSON-native values read back as themselves, and their text is the stdlib's compact one
    (separators, escapes, UTF-8 text). Floats are the exception in text only: `1e-05` is `0.00001`."""
    text = dumps(value)
    assert repr(json.loads(text)) == repr(value)  # repr: 1 is not 1.0, nor 0.0 -0.0
    if not _holds_a_float(value):
        assert text == _STANDARD_ENCODER.encode(value)


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def _cycle() -> list[Any]:
    cycle: list[Any] = []
    cycle.append(cycle)
    return cycle


def test_dumps_writes_nesting_past_pydantic_cores_depth_as_the_stdlib_did() -> None:
    """pydantic-core writes 254 levels; deeper values go to the stdlib's encoder (about 990)."""
    for depth in (254, 255, 300, 900):
        assert dumps(_nested(depth)) == _STANDARD_ENCODER.encode(_nested(depth))
        assert dumps_bytes(_nested(depth)) == _STANDARD_ENCODER.encode(_nested(depth)).encode()
    assert json.loads(dumps({"deep": _nested(300), "when": {date(2026, 12, 4)}})) == {
        "deep": _nested(300),
        "when": ["2026-12-04"],
    }


@pytest.mark.parametrize(
    ("value", "refusal"),
    [
        (_cycle(), "Circular reference"),
        ({"loop": _cycle()}, "Circular reference"),
        (_nested(100_000), "nested too deeply"),
        ({"a": object()}, "Unable to serialize unknown type"),
        ({"a": "\ud800"}, "surrogates not allowed"),
    ],
)
def test_dumps_refuses_what_it_cannot_write_with_a_value_error(value: Any, refusal: str) -> None:
    with pytest.raises(ValueError, match=refusal):
        dumps(value)
    with pytest.raises(ValueError, match=refusal):
        dumps_bytes(value)


def test_an_answer_that_cannot_be_written_becomes_an_internal_error_with_its_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    answer = {"jsonrpc": "2.0", "id": 7, "result": {"a": object()}}
    expected = {"jsonrpc": "2.0", "id": 7, "error": {"code": -32603, "message": "Internal error"}}
    written, body = written_answer(answer)
    assert written == json.loads(body) == expected
    assert [record.getMessage() for record in caplog.records] == ["the answer to request 7 cannot be written as JSON"]
    plain = {"jsonrpc": "2.0", "id": 8, "result": {"n": 1}}
    assert written_answer(plain) == (plain, dumps_bytes(plain))


# -- over the ASGI interface ------------------------------------------------------------------------


def _server_failing_with(data: Any) -> MCPServer:
    mcp = MCPServer("failing", version="1.0.0")

    @mcp.tool()
    async def fail(ctx: Context) -> str:
        await ctx.report_progress(1, 2)  # when asked for: an SSE answer, started before the error
        raise MCPError(code=-32602, message="out of range", data=data)  # a 400 on the modern wire

    return mcp


_OUT_OF_RANGE = {"code": -32602, "message": "out of range"}


@pytest.mark.anyio
@pytest.mark.parametrize(("json_response", "progress"), [(True, False), (False, False), (False, True)])
@pytest.mark.parametrize(
    ("data", "error"),
    [
        (
            {"limit": math.inf, "at": datetime(2026, 12, 4, tzinfo=timezone.utc)},
            {**_OUT_OF_RANGE, "data": {"limit": None, "at": "2026-12-04T00:00:00Z"}},
        ),
        (_nested(300), {**_OUT_OF_RANGE, "data": _nested(300)}),
        ({"a": object()}, {"code": -32603, "message": "Internal error"}),
    ],
    ids=["pydantic-json", "deep", "unwritable"],
)
async def test_an_error_json_cannot_hold_as_such_is_answered_in_both_eras(
    data: Any, error: dict[str, Any], json_response: bool, progress: bool
) -> None:
    """A handler's error whose `data` holds an infinity and a date is written as the SDK's transport
    writes it, one nested deeper than pydantic-core writes is written, and one that cannot be
    written becomes an internal error: each is the answer, with its id, on a stream that ends (also
    one that had started with a progress notification). Each was a 500 or a cut stream."""
    app = McpApp(_server_failing_with(data), json_response=json_response)
    meta = {"_meta": {"progressToken": "p"}} if progress else {}
    with anyio.fail_after(10):
        async with serving(app) as client:
            session_id = await open_session(client)
            legacy = await client.post(
                request(5, "tools/call", {"name": "fail", "arguments": {}, **meta}), session_id=session_id
            )
            modern = await modern_post(client, 6, "tools/call", {"name": "fail", "arguments": {}, **meta})
            for response, request_id in ((legacy, 5), (modern, 6)):
                # The modern era says "invalid params" with a 400, unless the answer is an SSE
                # stream already (progress first) or the internal error that replaced it.
                modern_400 = request_id == 6 and not progress and error["code"] == -32602
                assert response.status == (400 if modern_400 else 200)
                messages = (
                    await response.messages()
                    if response.content_type == "text/event-stream"
                    else [await response.json()]
                )
                assert response.complete
                assert [message.get("method") for message in messages[:-1]] == (
                    ["notifications/progress"] if progress else []
                )
                assert (messages[-1]["id"], messages[-1]["error"]) == (request_id, error)
