"""JSON-RPC classification of POST bodies, and precise answers to malformed input."""

from __future__ import annotations

import enum
import json
import math
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mcp import types
from mcp.server import Server, ServerRequestContext
from mcp.shared.exceptions import MCPError

from asgi_mcp import McpApp, ProtocolError
from asgi_mcp._core.errors import INVALID_REQUEST, PARSE_ERROR
from asgi_mcp._core.jsonrpc import classify, dumps, dumps_bytes, error_message, parse_body
from tests.kit.memory import final_message, modern_post, open_session, serving, session_call
from tests.kit.messages import call_tool


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
    assert json.loads(text) == value
    if not _holds_a_float(value):
        assert text == _STANDARD_ENCODER.encode(value)


def test_dumps_refuses_what_it_cannot_write_with_a_value_error() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    loop: dict[str, Any] = {}
    loop["self"] = {"up": loop}
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    for value in (cycle, loop, deep, {"a": object()}, {"a": "\ud800"}):
        with pytest.raises(ValueError, match="serializ"):
            dumps(value)
        with pytest.raises(ValueError, match="serializ"):
            dumps_bytes(value)


# -- over the ASGI interface ------------------------------------------------------------------------


def _server_whose_tool_fails_with(data: Any) -> Server[Any]:
    async def list_tools(ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[])

    async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        raise MCPError(code=-32001, message="out of range", data=data)

    return Server("failing", version="1.0.0", on_list_tools=list_tools, on_call_tool=call_tool)


@pytest.mark.anyio
@pytest.mark.parametrize("json_response", [True, False], ids=["json", "sse"])
async def test_an_errors_data_json_cannot_hold_as_such_is_answered_in_both_eras(json_response: bool) -> None:
    """A handler's error whose `data` holds an infinity and a date is the client's answer, with its
    id, as the SDK's transport would write it; the stdlib's encoder refused it (a 500, id null)."""
    data = {"limit": math.inf, "at": datetime(2026, 12, 4, tzinfo=timezone.utc)}
    expected = {"code": -32001, "message": "out of range", "data": {"limit": None, "at": "2026-12-04T00:00:00Z"}}
    app = McpApp(_server_whose_tool_fails_with(data), json_response=json_response)
    with anyio.fail_after(10):
        async with serving(app) as client:
            session_id = await open_session(client)
            legacy = await session_call(client, session_id, call_tool(5, "any", {}))
            assert (legacy["id"], legacy["error"]) == (5, expected)
            response = await modern_post(client, 6, "tools/call", {"name": "any", "arguments": {}})
            modern = await final_message(response)
            assert (response.status, modern["id"], modern["error"]) == (200, 6, expected)
